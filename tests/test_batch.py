"""POST /v1/fraud-score/batch: one inference for many rows, each equal to the single answer."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.scoring import batch_body_limit
from app.features import FEATURE_NAMES
from app.synthetic import generate
from tests.conftest import HEADERS

URL = "/v1/fraud-score/batch"


def generated_transactions(count: int, seed: int = 3) -> list[dict[str, float]]:
    features, _ = generate(rows=count, seed=seed, fraud_rate=0.2)
    return [dict(zip(FEATURE_NAMES, row.tolist(), strict=True)) for row in features]


def test_each_result_equals_the_single_answer_in_order(client: TestClient) -> None:
    transactions = generated_transactions(60)
    transactions[5] = {**transactions[5], "V4": 300.0}  # one out of distribution

    response = client.post(URL, json={"transactions": transactions}, headers=HEADERS)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model-version", "results"}
    assert len(body["results"]) == len(transactions)
    for transaction, result in zip(transactions, body["results"], strict=True):
        single = client.post("/v1/fraud-score", json=transaction, headers=HEADERS).json()
        assert result == {key: single[key] for key in ("fraud-score", "is-fraud", "ood-warning")}
        assert body["model-version"] == single["model-version"]
    assert body["results"][5]["ood-warning"] is True
    assert len({result["fraud-score"] for result in body["results"]}) > 1  # order is observable


def test_one_transaction_batch(client: TestClient, mock_body: dict[str, float]) -> None:
    response = client.post(URL, json={"transactions": [mock_body]}, headers=HEADERS)
    assert response.status_code == 200
    assert len(response.json()["results"]) == 1


def test_empty_batch_is_422(client: TestClient) -> None:
    response = client.post(URL, json={"transactions": []}, headers=HEADERS)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "transactions"]


def test_batch_over_max_size_is_422(client_factory: Any, mock_body: dict[str, float]) -> None:
    client = client_factory(max_batch_size=5)
    at_limit = client.post(URL, json={"transactions": [mock_body] * 5}, headers=HEADERS)
    over = client.post(URL, json={"transactions": [mock_body] * 6}, headers=HEADERS)

    assert at_limit.status_code == 200
    assert over.status_code == 422
    assert over.json()["detail"][0]["type"] == "too_long"


def test_default_max_batch_size_is_1000(client: TestClient, mock_body: dict[str, float]) -> None:
    assert (
        client.post(URL, json={"transactions": [mock_body] * 1000}, headers=HEADERS).status_code
        == 200
    )
    assert (
        client.post(URL, json={"transactions": [mock_body] * 1001}, headers=HEADERS).status_code
        == 422
    )


def test_bad_transaction_is_located_by_index(
    client: TestClient, mock_body: dict[str, float]
) -> None:
    text = json.dumps({"transactions": [mock_body, mock_body, {**mock_body, "V9": "__BAD__"}]})
    response = client.post(
        URL,
        content=text.replace('"__BAD__"', "NaN"),
        headers={**HEADERS, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["body", "transactions", 2, "V9"],
            "msg": "Input should be a finite number",
            "type": "finite_number",
        }
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"transactions": {}},
        {"transactions": None},
        {"transactions": [1, 2]},
        [],
        {"transactions": [], "x": 1},
    ],
    ids=["no-transactions", "object", "null", "numbers", "array", "unknown-field"],
)
def test_malformed_batches_are_422(client: TestClient, body: Any) -> None:
    response = client.post(URL, json=body, headers=HEADERS)
    assert response.status_code == 422
    assert all("input" not in item for item in response.json()["detail"])


def test_batch_body_limit_scales_with_max_batch_size(
    client_factory: Any, mock_body: dict[str, float]
) -> None:
    client = client_factory(max_batch_size=10)
    limit = batch_body_limit(10)
    text = json.dumps({"transactions": [mock_body] * 10})
    fits = text + " " * (limit - len(text))
    too_big = fits + " "

    assert batch_body_limit(10) < batch_body_limit(1000)
    assert (
        client.post(
            URL, content=fits, headers={**HEADERS, "Content-Type": "application/json"}
        ).status_code
        == 200
    )
    assert (
        client.post(
            URL, content=too_big, headers={**HEADERS, "Content-Type": "application/json"}
        ).status_code
        == 413
    )


def test_a_full_pretty_printed_batch_fits_the_limit(client: TestClient) -> None:
    transactions = generated_transactions(1000)
    text = json.dumps({"transactions": transactions}, indent=4)
    assert len(text) < batch_body_limit(1000)
    assert (
        client.post(
            URL, content=text, headers={**HEADERS, "Content-Type": "application/json"}
        ).status_code
        == 200
    )


def test_batch_requires_a_key(client: TestClient, mock_body: dict[str, float]) -> None:
    assert client.post(URL, json={"transactions": [mock_body]}).status_code == 403


def test_batch_without_a_model_is_503(
    client_factory: Any, tmp_path: Any, mock_body: dict[str, float]
) -> None:
    client = client_factory(model_path=tmp_path / "absent.joblib")
    response = client.post(URL, json={"transactions": [mock_body]}, headers=HEADERS)
    assert response.status_code == 503
    assert response.json()["error"] == "model_unavailable"
