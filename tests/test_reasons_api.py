"""Reason codes over HTTP: `explain` and `max_reasons` on the scoring routes, per the contract."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.features import FEATURE_NAMES, row_to_dict
from app.synthetic import generate
from tests.conftest import HEADERS

SCORE, BATCH = "/v1/fraud-score", "/v1/fraud-score/batch"
PLAIN_KEYS = {"fraud-score", "is-fraud", "ood-warning", "model-version"}


@pytest.fixture(scope="module")
def transactions() -> list[dict[str, float]]:
    """Generated rows, fraud-heavy so that contributions of both signs and large scores occur."""
    features, _ = generate(rows=40, seed=11, fraud_rate=0.5)
    return [row_to_dict(row) for row in features.tolist()]


def explained(client: TestClient, body: dict[str, float], **params: Any) -> dict[str, Any]:
    response = client.post(SCORE, json=body, headers=HEADERS, params={"explain": "true", **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_without_explain_the_answer_is_exactly_as_before(
    client: TestClient, transactions: list[dict[str, float]]
) -> None:
    for params in ({}, {"explain": "false"}, {"explain": "false", "max_reasons": "7"}):
        response = client.post(SCORE, json=transactions[0], headers=HEADERS, params=params)
        assert response.status_code == 200
        assert set(response.json()) == PLAIN_KEYS
    batch = client.post(BATCH, json={"transactions": transactions[:3]}, headers=HEADERS)
    assert [set(result) for result in batch.json()["results"]] == [
        {"fraud-score", "is-fraud", "ood-warning"}
    ] * 3


def test_explained_answer_adds_reasons_and_baseline_only(
    client: TestClient, transactions: list[dict[str, float]]
) -> None:
    for body in transactions:
        plain = client.post(SCORE, json=body, headers=HEADERS).json()
        answer = explained(client, body)
        assert set(answer) == PLAIN_KEYS | {"reasons", "baseline"}
        assert {key: answer[key] for key in PLAIN_KEYS} == plain
        assert len(answer["reasons"]) == 3
        for reason in answer["reasons"]:
            assert set(reason) == {"feature", "contribution", "value"}
            assert reason["value"] == body[reason["feature"]]  # the value as scored


def test_reasons_are_ordered_largest_first_and_sum_to_the_score(
    client: TestClient, transactions: list[dict[str, float]]
) -> None:
    baselines = set()
    for body in transactions:
        answer = explained(client, body, max_reasons="30")
        reasons = answer["reasons"]
        assert sorted(reason["feature"] for reason in reasons) == sorted(FEATURE_NAMES)
        contributions = [reason["contribution"] for reason in reasons]
        assert contributions == sorted(contributions, reverse=True)
        total = answer["baseline"] + sum(contributions)  # = 100 × P(fraud), within 1e-3
        assert abs(total - answer["fraud-score"]) <= 0.5 + 1e-3
        baselines.add(answer["baseline"])
    assert len(baselines) == 1  # the same for every transaction of a model
    assert 0 < baselines.pop() < 100


def test_top_reasons_are_the_head_of_all_reasons(
    client: TestClient, transactions: list[dict[str, float]]
) -> None:
    body = transactions[5]
    every = explained(client, body, max_reasons="30")["reasons"]
    for count in (1, 3, 29):
        assert explained(client, body, max_reasons=str(count))["reasons"] == every[:count]


def test_batch_explains_each_transaction_as_the_single_route_does(
    client: TestClient, transactions: list[dict[str, float]]
) -> None:
    response = client.post(
        BATCH,
        json={"transactions": transactions},
        headers=HEADERS,
        params={"explain": "true", "max_reasons": "5"},
    )
    assert response.status_code == 200
    singles = [explained(client, body, max_reasons="5") for body in transactions]
    expected = [{k: v for k, v in single.items() if k != "model-version"} for single in singles]
    assert response.json()["results"] == expected


@pytest.mark.parametrize(
    ("params", "location"),
    [
        ({"explain": "maybe"}, "explain"),
        ({"explain": ""}, "explain"),
        ({"explain": "yes"}, "explain"),
        ({"explain": "2"}, "explain"),
        ({"explain": "true", "max_reasons": "0"}, "max_reasons"),
        ({"explain": "true", "max_reasons": "31"}, "max_reasons"),
        ({"explain": "true", "max_reasons": "-1"}, "max_reasons"),
        ({"explain": "true", "max_reasons": "3.0"}, "max_reasons"),
        ({"explain": "true", "max_reasons": "three"}, "max_reasons"),
        ({"explain": "true", "max_reasons": ""}, "max_reasons"),
        ({"explain": "true", "max_reasons": "99999999999999999999999"}, "max_reasons"),
        ({"max_reasons": "0"}, "max_reasons"),
        # past int()'s 4,300-digit limit for text, with or without explain
        ({"explain": "true", "max_reasons": "9" * 4301}, "max_reasons"),
        ({"max_reasons": "1" * 5000}, "max_reasons"),
        ({"explain": "true", "max_reasons": "0" * 5000 + "31"}, "max_reasons"),
    ],
)
@pytest.mark.parametrize("path", [SCORE, BATCH])
def test_bad_explain_parameters_are_422(
    client: TestClient,
    transactions: list[dict[str, float]],
    params: dict[str, str],
    location: str,
    path: str,
) -> None:
    body = transactions[0] if path == SCORE else {"transactions": transactions[:2]}
    response = client.post(path, json=body, headers=HEADERS, params=params)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", location]]


def test_explain_is_case_insensitive(
    client: TestClient, transactions: list[dict[str, float]]
) -> None:
    for value in ("True", "TRUE"):
        response = client.post(
            SCORE, json=transactions[0], headers=HEADERS, params={"explain": value}
        )
        assert "reasons" in response.json()


def test_both_engines_give_the_same_reasons(
    client_factory: Callable[..., TestClient], transactions: list[dict[str, float]]
) -> None:
    onnx, sklearn = client_factory(), client_factory(model_engine="sklearn")
    for body in transactions[:10]:
        a = explained(onnx, body, max_reasons="30")
        b = explained(sklearn, body, max_reasons="30")
        assert a["fraud-score"] == b["fraud-score"]
        assert a["baseline"] == pytest.approx(b["baseline"], abs=1e-9)
        by_feature = {reason["feature"]: reason["contribution"] for reason in b["reasons"]}
        for reason in a["reasons"]:
            assert reason["contribution"] == pytest.approx(by_feature[reason["feature"]], abs=1e-4)


def test_model_info_names_the_explanation(client: TestClient) -> None:
    assert client.get("/v1/model-info", headers=HEADERS).json()["explanation"] == "tree-path"


def test_an_onnx_without_reason_codes_serves_plain_scores_and_refuses_explain(
    client_factory: Callable[..., TestClient],
    model_path: Path,
    tmp_path: Path,
    transactions: list[dict[str, float]],
) -> None:
    import onnx

    from app.card import card_path

    # An .onnx as training wrote it before reason codes existed: the classifier alone.
    model = onnx.load(str(model_path.with_suffix(".onnx")))
    classifier_outputs = {"label", "probabilities"}
    nodes = [node for node in model.graph.node if set(node.output) & classifier_outputs]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [output for output in model.graph.output if output.name in classifier_outputs]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    old = tmp_path / "old.onnx"
    old.write_bytes(model.SerializeToString())
    card_path(old).write_bytes(card_path(model_path).read_bytes())

    client = client_factory(model_path=old)
    assert client.get("/v1/model-info", headers=HEADERS).json()["explanation"] is None
    plain = client.post(SCORE, json=transactions[0], headers=HEADERS)
    assert plain.status_code == 200
    assert set(plain.json()) == PLAIN_KEYS
    refused = client.post(SCORE, json=transactions[0], headers=HEADERS, params={"explain": "true"})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["query", "explain"]
    assert "reason codes" in refused.json()["detail"][0]["msg"]


def test_contributions_move_with_the_feature_that_drives_fraud(
    client: TestClient, transactions: list[dict[str, float]]
) -> None:
    # A sanity check on meaning: a high-scoring transaction's top reasons push the score up.
    answers = [explained(client, body) for body in transactions]
    high = [answer for answer in answers if answer["fraud-score"] >= 80]
    assert high, "the fixture should contain high-scoring transactions"
    for answer in high:
        assert answer["reasons"][0]["contribution"] > 0
        assert np.isclose(answer["baseline"], answers[0]["baseline"])
