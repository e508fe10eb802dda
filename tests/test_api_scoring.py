"""POST /v1/fraud-score: the contract's answers, statuses and error bodies, in process."""

import gzip
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.features import FEATURE_NAMES, to_matrix, to_model_input
from tests.conftest import API_KEY, HEADERS, ROTATION_KEY

URL = "/v1/fraud-score"


def post_raw(client: TestClient, body: bytes | str, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        URL,
        content=body,
        headers={"Content-Type": "application/json", **(HEADERS if headers is None else headers)},
    )


def with_value(body: dict[str, Any], feature: str, literal: str) -> str:
    """The body as JSON text with one feature's value replaced by a raw JSON literal."""
    text = json.dumps({**body, feature: "__MARK__"})
    return text.replace('"__MARK__"', literal)


def test_scores_the_mock_body(client: TestClient, mock_body: dict[str, float]) -> None:
    response = client.post(URL, json=mock_body, headers=HEADERS)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"fraud-score", "is-fraud", "model-version", "ood-warning"}
    assert type(body["fraud-score"]) is int
    assert 0 <= body["fraud-score"] <= 100
    assert body["is-fraud"] is (body["fraud-score"] >= 50)
    assert body["model-version"] == "1.0.0"
    assert body["ood-warning"] is False


def test_score_is_rounded_probability_of_the_engine(
    client: TestClient, mock_body: dict[str, float]
) -> None:
    scorer = client.app.state.scorer  # type: ignore[attr-defined]
    rows = [mock_body, {**mock_body, "V14": -9.0, "V17": -9.0, "V12": -8.0, "V10": -7.0}]
    for row in rows:
        matrix = to_model_input(to_matrix([[row[name] for name in FEATURE_NAMES]]))
        expected = round(100 * float(scorer.engine.fraud_probability(matrix)[0]))
        assert client.post(URL, json=row, headers=HEADERS).json()["fraud-score"] == expected


def test_fraud_like_transaction_scores_high(
    client: TestClient, mock_body: dict[str, float]
) -> None:
    fraud_like = {**mock_body, "V3": -8.0, "V10": -7.0, "V12": -9.0, "V14": -10.0, "V17": -9.0}
    body = client.post(URL, json=fraud_like, headers=HEADERS).json()
    assert body["fraud-score"] >= 50
    assert body["is-fraud"] is True


@pytest.mark.parametrize(("threshold", "expected"), [(0, True), (100, False)])
def test_is_fraud_follows_the_threshold(
    client_factory: Any, mock_body: dict[str, float], threshold: int, expected: bool
) -> None:
    client = client_factory(fraud_threshold=threshold)
    body = client.post(URL, json=mock_body, headers=HEADERS).json()
    assert body["is-fraud"] is expected
    assert body["is-fraud"] is (body["fraud-score"] >= threshold)


def test_model_version_comes_from_settings(
    client_factory: Any, mock_body: dict[str, float]
) -> None:
    client = client_factory(model_version="2026.11-rc1")
    assert (
        client.post(URL, json=mock_body, headers=HEADERS).json()["model-version"] == "2026.11-rc1"
    )


def test_integers_are_numbers(client: TestClient, mock_body: dict[str, float]) -> None:
    body = {name: int(value) for name, value in mock_body.items()}
    assert client.post(URL, json=body, headers=HEADERS).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": "wrong-key-0000000000000"},
        {"X-API-Key": API_KEY + " "},
        {"X-API-Key": API_KEY.upper()},
        {"Authorization": f"Bearer {API_KEY}"},
    ],
    ids=["missing", "empty", "wrong", "trailing-space", "case-changed", "bearer-instead"],
)
def test_forbidden_without_a_valid_key(
    client: TestClient, mock_body: dict[str, float], headers: dict[str, str]
) -> None:
    response = client.post(URL, json=mock_body, headers=headers)

    assert response.status_code == 403
    assert "detail" in response.json()
    assert API_KEY not in response.text


def test_key_in_query_string_does_not_count(
    client: TestClient, mock_body: dict[str, float]
) -> None:
    response = client.post(f"{URL}?api_key={API_KEY}&X-API-Key={API_KEY}", json=mock_body)
    assert response.status_code == 403


def test_rotation_key_is_accepted(client: TestClient, mock_body: dict[str, float]) -> None:
    response = client.post(URL, json=mock_body, headers={"X-API-Key": ROTATION_KEY})
    assert response.status_code == 200


def test_auth_is_checked_before_the_body(client: TestClient) -> None:
    assert post_raw(client, "{not json", headers={}).status_code == 403


MALFORMED = {
    "not-json": "{not json",
    "truncated": '{"Time": 1',
    "empty-body": "",
    "array": "[1, 2, 3]",
    "string": '"hello"',
    "number": "42",
    "null": "null",
    "bare-nan": "NaN",
    "deeply-nested": "[" * 5000 + "]" * 5000,
    "invalid-utf8": b"\xff\xfe{}",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_or_non_object_bodies_are_422(client: TestClient, body: str | bytes) -> None:
    response = post_raw(client, body)

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert detail
    assert all(set(item) == {"loc", "msg", "type"} for item in detail)
    assert detail[0]["loc"][0] == "body"


BAD_VALUES = {
    "numeric-string": '"1.5"',
    "empty-string": '""',
    "true": "true",
    "false": "false",
    "null": "null",
    "list": "[1.0]",
    "object": '{"value": 1.0}',
    "NaN": "NaN",
    "Infinity": "Infinity",
    "minus-Infinity": "-Infinity",
    "overflowing-literal": "1e999",
    "overflowing-negative": "-1e999",
    "400-digit-integer": "9" * 400,
    "5000-digit-integer": "9" * 5000,
    "hex": "0x10",
    "leading-plus": "+1",
}


@pytest.mark.parametrize("literal", BAD_VALUES.values(), ids=BAD_VALUES.keys())
@pytest.mark.parametrize("feature", ["Time", "V14", "Amount"])
def test_values_that_are_not_finite_json_numbers_are_422(
    client: TestClient, mock_body: dict[str, float], feature: str, literal: str
) -> None:
    response = post_raw(client, with_value(mock_body, feature, literal))

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert all("input" not in item and "ctx" not in item for item in detail)
    if not literal.startswith(("0x", "+")) and len(literal) < 1000:  # those are JSON syntax errors
        assert ["body", feature] in [item["loc"] for item in detail]


def test_missing_feature_is_named(client: TestClient, mock_body: dict[str, float]) -> None:
    body = {name: value for name, value in mock_body.items() if name != "V7"}
    detail = client.post(URL, json=body, headers=HEADERS).json()["detail"]
    assert detail == [{"loc": ["body", "V7"], "msg": "Field required", "type": "missing"}]


def test_unknown_field_is_refused(client: TestClient, mock_body: dict[str, float]) -> None:
    response = client.post(URL, json={**mock_body, "Class": 1}, headers=HEADERS)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "Class"]
    assert response.json()["detail"][0]["type"] == "extra_forbidden"


def test_feature_names_are_case_sensitive(client: TestClient, mock_body: dict[str, float]) -> None:
    body = {("amount" if name == "Amount" else name): value for name, value in mock_body.items()}
    assert client.post(URL, json=body, headers=HEADERS).status_code == 422


def test_error_bodies_do_not_echo_values(client: TestClient, mock_body: dict[str, float]) -> None:
    marker = "731.2468"
    response = post_raw(client, with_value(mock_body, "V5", f'"{marker}"'))
    assert response.status_code == 422
    assert marker not in response.text


@pytest.mark.parametrize(
    "value", [1e300, -1e300, 3.5e38, 5e-324, -0.0, 1.7976931348623157e308], ids=str
)
def test_extreme_but_finite_values_are_scored(
    client: TestClient, mock_body: dict[str, float], value: float
) -> None:
    response = client.post(URL, json={**mock_body, "Amount": value}, headers=HEADERS)
    assert response.status_code == 200
    assert response.json()["ood-warning"] is (abs(value) > 1e6)


def test_a_field_given_twice_is_422_whichever_value_is_bad(
    client: TestClient, mock_body: dict[str, float]
) -> None:
    for text in (
        json.dumps(mock_body)[:-1] + ', "Amount": "oops"}',
        '{"Amount": NaN, ' + json.dumps(mock_body)[1:],
        json.dumps(mock_body)[:-1] + ', "Amount": 1.5}',
    ):
        response = post_raw(client, text)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "Amount"]
        assert response.json()["detail"][0]["type"] == "duplicate_field"


@pytest.mark.parametrize("route", [URL, "/v1/fraud-score/batch"])
def test_a_key_written_as_a_field_name_is_not_echoed(
    client: TestClient, mock_body: dict[str, float], route: str
) -> None:
    transaction = {**mock_body, API_KEY: 1.0, f"x{ROTATION_KEY}x": 2.0}
    body = transaction if route == URL else {"transactions": [transaction]}
    response = client.post(route, json=body, headers=HEADERS)
    assert response.status_code == 422
    assert API_KEY not in response.text
    assert ROTATION_KEY not in response.text
    unknown = [error["loc"][-1] for error in response.json()["detail"]]
    assert unknown == ["[api-key]", "x[api-key]x"]


def test_body_over_64_kib_is_413(client: TestClient, mock_body: dict[str, float]) -> None:
    padded = json.dumps(mock_body) + " " * (64 * 1024)
    response = post_raw(client, padded)

    assert response.status_code == 413
    assert "detail" in response.json()


def test_body_of_exactly_64_kib_is_read(client: TestClient, mock_body: dict[str, float]) -> None:
    text = json.dumps(mock_body)
    padded = text + " " * (64 * 1024 - len(text))
    assert post_raw(client, padded).status_code == 200


def test_streamed_body_without_length_is_limited_too(
    client: TestClient, mock_body: dict[str, float]
) -> None:
    def chunks() -> Any:
        yield json.dumps(mock_body).encode()
        for _ in range(80):
            yield b" " * 1024

    response = client.post(
        URL, content=chunks(), headers={**HEADERS, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_ood_warning_for_a_far_out_value(client: TestClient, mock_body: dict[str, float]) -> None:
    response = client.post(URL, json={**mock_body, "V4": 250.0}, headers=HEADERS)
    assert response.json()["ood-warning"] is True


def test_ood_warning_uses_three_training_deviations(
    client: TestClient, mock_body: dict[str, float]
) -> None:
    stats = client.app.state.scorer.card["feature_stats"]["V2"]  # type: ignore[attr-defined]
    inside = stats["mean"] + 2.9 * stats["std"]
    outside = stats["mean"] + 3.1 * stats["std"]
    for value, expected in ((inside, False), (outside, True)):
        body = client.post(URL, json={**mock_body, "V2": value}, headers=HEADERS).json()
        assert body["ood-warning"] is expected


def test_request_id_is_echoed_or_generated(client: TestClient, mock_body: dict[str, float]) -> None:
    echoed = client.post(URL, json=mock_body, headers={**HEADERS, "X-Request-ID": "abc-123"})
    generated = client.post(URL, json=mock_body, headers={**HEADERS, "X-Request-ID": "bad id!"})

    assert echoed.headers["X-Request-ID"] == "abc-123"
    assert generated.headers["X-Request-ID"] not in ("", "bad id!")
    assert generated.headers["X-Request-ID"].isalnum()


def test_unknown_route_is_404_json(client: TestClient) -> None:
    response = client.get("/v1/nothing-here", headers=HEADERS)
    assert response.status_code == 404
    assert "detail" in response.json()


def test_wrong_method_is_405(client: TestClient) -> None:
    assert client.get(URL, headers=HEADERS).status_code == 405


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 200),
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("application/vnd.fraud+json", 200),
        ("text/plain", 422),
        ("application/x-www-form-urlencoded", 422),
        ("multipart/form-data; boundary=x", 422),
    ],
)
def test_content_type_rule_is_fastapis(
    client: TestClient, mock_body: dict[str, float], content_type: str | None, status: int
) -> None:
    headers = {**HEADERS, **({"Content-Type": content_type} if content_type else {})}
    response = client.post(URL, content=json.dumps(mock_body), headers=headers)

    assert response.status_code == status
    if status == 422:
        assert response.json()["detail"] == [
            {
                "loc": ["body"],
                "msg": "Content-Type must be application/json",
                "type": "content_type",
            }
        ]


@pytest.mark.parametrize("path", [URL, "/v1/fraud-score/batch"])
def test_a_gzipped_body_is_a_422_naming_the_content_encoding(
    client: TestClient, mock_body: dict[str, float], path: str
) -> None:
    document = mock_body if path == URL else {"transactions": [mock_body]}
    headers = {**HEADERS, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = client.post(
        path, content=gzip.compress(json.dumps(document).encode()), headers=headers
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "content-encoding"]
    plain = client.post(path, json=document, headers={**HEADERS, "Content-Encoding": "identity"})
    assert plain.status_code == 200


def test_a_422_lists_at_most_100_errors(client: TestClient) -> None:
    flooded = {f"k{index}": 0 for index in range(500)}  # 530 errors in one transaction
    response = client.post("/v1/fraud-score", json=flooded, headers=HEADERS)
    assert response.status_code == 422
    assert len(response.json()["detail"]) == 100
