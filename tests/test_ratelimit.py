"""RATE_LIMIT per API key, in memory (one process), and failing open when Redis is unreachable."""

import time
from typing import Any

from prometheus_client import REGISTRY

from tests.conftest import HEADERS, ROTATION_KEY
from tests.server import free_port

URL = "/v1/fraud-score"


def test_limit_per_key_with_headers(client_factory: Any, mock_body: dict[str, float]) -> None:
    client = client_factory(rate_limit="5/minute")
    before = REGISTRY.get_sample_value("fraud_rate_limit_rejections_total") or 0

    answers = [client.post(URL, json=mock_body, headers=HEADERS) for _ in range(7)]

    assert [answer.status_code for answer in answers] == [200] * 5 + [429] * 2
    assert [answer.headers["X-RateLimit-Remaining"] for answer in answers[:5]] == [
        "4",
        "3",
        "2",
        "1",
        "0",
    ]
    refused = answers[5]
    assert refused.json()["error"] == "rate_limited"
    assert "detail" in refused.json()
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Limit"] == "5"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert (REGISTRY.get_sample_value("fraud_rate_limit_rejections_total") or 0) - before == 2
    other_key = client.post(URL, json=mock_body, headers={"X-API-Key": ROTATION_KEY})
    assert other_key.status_code == 200


def test_every_authenticated_route_counts(client_factory: Any, mock_body: dict[str, float]) -> None:
    client = client_factory(rate_limit="3/minute")
    client.get("/v1/model-info", headers=HEADERS)
    client.post(URL + "/batch", json={"transactions": [mock_body]}, headers=HEADERS)
    client.post(URL, json={}, headers=HEADERS)  # a 422 still costs a request
    assert client.post(URL, json=mock_body, headers=HEADERS).status_code == 429


def test_open_routes_and_bad_keys_are_not_limited(
    client_factory: Any, mock_body: dict[str, float]
) -> None:
    client = client_factory(rate_limit="2/minute")
    for _ in range(5):
        assert client.get("/health").status_code == 200
        assert client.post(URL, json=mock_body, headers={"X-API-Key": "x" * 20}).status_code == 403
    assert client.post(URL, json=mock_body, headers=HEADERS).status_code == 200


def test_several_limits_apply_together(client_factory: Any, mock_body: dict[str, float]) -> None:
    client = client_factory(rate_limit="100/minute;2/second")
    codes = [client.post(URL, json=mock_body, headers=HEADERS).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_unreachable_redis_fails_open(
    client_factory: Any, mock_body: dict[str, float], caplog: Any
) -> None:
    closed_port = free_port()
    client = client_factory(
        rate_limit="1/minute", rate_limit_storage_uri=f"redis://127.0.0.1:{closed_port}/0"
    )
    before = REGISTRY.get_sample_value("fraud_rate_limit_storage_errors_total") or 0

    codes = [client.post(URL, json=mock_body, headers=HEADERS).status_code for _ in range(4)]

    assert codes == [200] * 4
    after = REGISTRY.get_sample_value("fraud_rate_limit_storage_errors_total") or 0
    assert after - before == 4  # each skipped check, not each attempt to reach Redis
    assert caplog.text.count("rate-limit storage unreachable") == 1
