"""The by-id routes over HTTP (in-process) against a real redis-server, as the contract says."""

import csv
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.card import card_path
from app.contributions import split
from app.features import FEATURE_NAMES, meta_key, record_fields, row_to_dict, transaction_key
from app.synthetic import generate
from tests.conftest import HEADERS, SAMPLE_CSV, needs_sample
from tests.redis_server import RedisServer, requires_redis, start_redis
from tests.server import run_in_repo

pytestmark = requires_redis

PREFIX = "api:v1"
BY_ID, BY_ID_BATCH = "/v1/fraud-score/by-id", "/v1/fraud-score/by-id/batch"
SCORE, BATCH = "/v1/fraud-score", "/v1/fraud-score/batch"
SINGLE_KEYS = {"transaction-id", "fraud-score", "is-fraud", "ood-warning", "model-version"}
ROWS, _ = generate(rows=60, seed=23, fraud_rate=0.3)
_CLOCK_AND_PROCESS = {"created", "msecs", "relativeCreated", "thread", "process", "lineno"}


@pytest.fixture(scope="module")
def redis_server(shared_redis: RedisServer) -> RedisServer:
    return shared_redis


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[Any]:
    """An empty store holding ROWS as txn-0 … txn-59 (written as the loader writes them)."""
    client = redis_server.client()
    client.flushall()
    pipe = client.pipeline()
    for index, row in enumerate(ROWS.tolist()):
        pipe.hset(transaction_key(PREFIX, f"txn-{index}"), mapping=record_fields(row, time.time()))
    pipe.execute()
    yield client
    client.close()


@pytest.fixture
def by_id_client(
    client_factory: Callable[..., TestClient], redis_server: RedisServer, store: Any
) -> TestClient:
    return client_factory(
        feature_store_uri=redis_server.uri,
        feature_store_prefix=PREFIX,
        feature_store_timeout_ms=500,
    )


def post(client: TestClient, path: str, body: Any, **params: str) -> Any:
    return client.post(path, json=body, headers=HEADERS, params=params)


def test_by_id_equals_the_raw_route_for_the_same_row(by_id_client: TestClient) -> None:
    for index, row in enumerate(ROWS.tolist()):
        raw = post(by_id_client, SCORE, row_to_dict(row)).json()
        response = post(by_id_client, BY_ID, {"transaction_id": f"txn-{index}"})
        assert response.status_code == 200
        assert set(response.json()) == SINGLE_KEYS
        assert response.json() == {"transaction-id": f"txn-{index}", **raw}


def test_explained_by_id_equals_the_explained_raw_route(by_id_client: TestClient) -> None:
    for index in (0, 7, 31):
        params = {"explain": "true", "max_reasons": "30"}
        raw = post(by_id_client, SCORE, row_to_dict(ROWS[index].tolist()), **params).json()
        by_id = post(by_id_client, BY_ID, {"transaction_id": f"txn-{index}"}, **params).json()
        assert by_id == {"transaction-id": f"txn-{index}", **raw}
        assert len(by_id["reasons"]) == 30


@needs_sample
def test_materialized_sample_round_trip(
    client_factory: Callable[..., TestClient], redis_server: RedisServer, store: Any
) -> None:
    """The loader's CLI on the real sample, then every row by id equals the raw batch's answer."""
    store.flushall()
    result = run_in_repo(
        sys.executable, "-m", "app.featurestore", "materialize", "--source", SAMPLE_CSV,
        "--row-number-ids", "--uri", redis_server.uri, "--prefix", PREFIX,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with SAMPLE_CSV.open(newline="") as handle:
        rows = [
            {name: float(record[name]) for name in FEATURE_NAMES}
            for record in csv.DictReader(handle)
        ]
    client = client_factory(feature_store_uri=redis_server.uri, feature_store_prefix=PREFIX)
    raw = post(client, BATCH, {"transactions": rows}).json()["results"]
    ids = [str(index) for index in range(len(rows))]
    by_id = post(client, BY_ID_BATCH, {"transaction_ids": ids}).json()["results"]
    assert [result["status"] for result in by_id] == ["scored"] * len(rows)
    for identifier, expected, got in zip(ids, raw, by_id, strict=True):
        assert got == {
            "transaction-id": identifier,
            "status": "scored",
            **expected,
            "model-version": "1.0.0",
        }


def test_unknown_and_expired_ids_are_404(by_id_client: TestClient, store: Any) -> None:
    response = post(by_id_client, BY_ID, {"transaction_id": "never-written"})
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_transaction"
    assert response.json()["detail"]
    store.pexpire(transaction_key(PREFIX, "txn-3"), 50)
    time.sleep(0.2)
    assert post(by_id_client, BY_ID, {"transaction_id": "txn-3"}).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"transaction_id": 12345},
        {"transaction_id": None},
        {"transaction_id": True},
        {"transaction_id": ""},
        {"transaction_id": "x" * 129},
        {"transaction_id": "has space"},
        {"transaction_id": "slash/inside"},
        {"transaction_id": "star*"},
        {"transaction_id": "ünïcode"},
        {"transaction_id": "new\nline"},
        {"transaction_id": ["txn-1"]},
        {"transaction-id": "txn-1"},
        {"transaction_id": "txn-1", "extra": 1},
        {},
        ["txn-1"],
        "txn-1",
    ],
)
def test_bad_ids_are_422(by_id_client: TestClient, body: Any) -> None:
    response = post(by_id_client, BY_ID, body)
    assert response.status_code == 422
    for error in response.json()["detail"]:
        assert set(error) == {"loc", "msg", "type"}  # never the input echoed


def test_an_id_given_twice_is_422_whichever_is_stored(by_id_client: TestClient, store: Any) -> None:
    store.hset(transaction_key(PREFIX, "twice-2"), mapping=record_fields(ROWS[0].tolist(), 0))
    for first, last in (("bad id", "twice-2"), ("twice-2", "twice-2")):
        body = f'{{"transaction_id": "{first}", "transaction_id": "{last}"}}'
        response = by_id_client.post(BY_ID, content=body, headers=HEADERS)
        assert response.status_code == 422
        assert response.json()["detail"] == [
            {
                "loc": ["body", "transaction_id"],
                "msg": "Field given more than once",
                "type": "duplicate_field",
            }
        ]
    twice = '{"transaction_ids": ["twice-2"], "transaction_ids": ["twice-2"]}'
    response = by_id_client.post(BY_ID_BATCH, content=twice, headers=HEADERS)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "transaction_ids"]]


def test_the_longest_id_is_accepted(by_id_client: TestClient, store: Any) -> None:
    longest = "A-z0.9_:" * 16
    assert len(longest) == 128
    store.hset(transaction_key(PREFIX, longest), mapping=record_fields(ROWS[0].tolist(), 0))
    assert post(by_id_client, BY_ID, {"transaction_id": longest}).status_code == 200


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"transaction_ids": []}, ["body", "transaction_ids"]),
        ({"transaction_ids": ["txn-1", "bad id", "txn-2"]}, ["body", "transaction_ids", 1]),
        ({"transaction_ids": "txn-1"}, ["body", "transaction_ids"]),
        ({"transaction_ids": ["txn-1"] * 1001}, ["body", "transaction_ids"]),
    ],
)
def test_bad_id_batches_are_422(by_id_client: TestClient, body: Any, location: list[Any]) -> None:
    response = post(by_id_client, BY_ID_BATCH, body)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [location]


def test_not_configured_is_501_on_both_routes(client: TestClient) -> None:
    for path, body in (
        (BY_ID, {"transaction_id": "txn-1"}),
        (BY_ID_BATCH, {"transaction_ids": ["a"]}),
    ):
        response = post(client, path, body)
        assert response.status_code == 501
        assert response.json()["error"] == "feature_store_not_configured"
    # the raw routes and /health do not care
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"V4": "abc"}, "V4"),
        ({"V4": "1_000"}, "V4"),
        ({"V4": " 1.5"}, "V4"),
        ({"V4": "0x10"}, "V4"),
        ({"Amount": "inf"}, "Amount"),
        ({"Amount": "nan"}, "Amount"),
        ({"Amount": "1e999"}, "Amount"),
        ({"Amount": ""}, "Amount"),
        ({"surplus": "1.0"}, "surplus"),
        (None, "V9"),  # V9 missing
    ],
)
def test_invalid_stored_records_are_502_and_logged_without_values(
    by_id_client: TestClient, store: Any, caplog: pytest.LogCaptureFixture, change: Any, field: str
) -> None:
    key = transaction_key(PREFIX, "txn-5")
    if change is None:
        store.hdel(key, "V9")
    else:
        store.hset(key, mapping=change)
    with caplog.at_level(logging.INFO):
        response = post(by_id_client, BY_ID, {"transaction_id": "txn-5"})
    assert response.status_code == 502
    assert response.json()["error"] == "invalid_feature_record"
    records = [record for record in caplog.records if "txn-5" in str(record.__dict__)]
    assert records, "the invalid record's id is logged"
    # Everything a record carries but its clock and process numbers, which a short value could
    # match by chance ("2.25" in a `created` of 1764612345.2254).
    logged = " ".join(
        str({k: v for k, v in record.__dict__.items() if k not in _CLOCK_AND_PROCESS})
        for record in caplog.records
    )
    assert field in logged
    for value in (*(change or {}).values(), *record_fields(ROWS[5].tolist(), 0).values()):
        if len(value) > 3:  # a short value ("nan", "") could appear in other text by chance
            assert value not in logged


def test_batch_keeps_order_duplicates_and_mixed_statuses(
    by_id_client: TestClient, store: Any
) -> None:
    store.hset(transaction_key(PREFIX, "txn-9"), "V1", "not-a-number")
    ids = ["txn-1", "missing", "txn-9", "txn-1", "txn-2", "missing"]
    response = post(by_id_client, BY_ID_BATCH, {"transaction_ids": ids})
    assert response.status_code == 200
    answer = response.json()
    assert answer["model-version"] == "1.0.0"
    results = answer["results"]
    assert [result["transaction-id"] for result in results] == ids
    assert [result["status"] for result in results] == [
        "scored", "not_found", "invalid_record", "scored", "scored", "not_found",
    ]  # fmt: skip
    for result in results:
        if result["status"] == "scored":
            single = post(by_id_client, BY_ID, {"transaction_id": result["transaction-id"]}).json()
            assert result == {**single, "status": "scored"}
        else:
            assert set(result) == {"transaction-id", "status"}


def test_a_batch_with_nothing_found_is_still_200(by_id_client: TestClient) -> None:
    response = post(by_id_client, BY_ID_BATCH, {"transaction_ids": ["nope-1", "nope-2"]})
    assert response.status_code == 200
    assert [result["status"] for result in response.json()["results"]] == ["not_found"] * 2


def test_explained_batch_explains_scored_results_only(by_id_client: TestClient) -> None:
    ids = ["txn-4", "nope", "txn-11", "txn-4", "txn-30"]
    params = {"explain": "true", "max_reasons": "5"}
    response = post(by_id_client, BY_ID_BATCH, {"transaction_ids": ids}, **params)
    results = response.json()["results"]
    assert results[1] == {"transaction-id": "nope", "status": "not_found"}
    for result in (results[0], *results[2:]):
        assert len(result["reasons"]) == 5
        single = post(by_id_client, BY_ID, {"transaction_id": result["transaction-id"]}, **params)
        assert result == {**single.json(), "status": "scored"}


def test_a_meta_record_of_other_features_refuses_by_id_but_not_raw_scoring(
    client_factory: Callable[..., TestClient], redis_server: RedisServer, store: Any
) -> None:
    store.hset(meta_key(PREFIX), mapping={"features": ",".join(reversed(FEATURE_NAMES))})
    client = client_factory(feature_store_uri=redis_server.uri, feature_store_prefix=PREFIX)
    response = post(client, BY_ID, {"transaction_id": "txn-1"})
    assert response.status_code == 503
    assert response.json()["error"] == "feature_store_unavailable"
    assert "materialized with other features" in response.json()["detail"]
    assert int(response.headers["Retry-After"]) >= 1
    assert post(client, BY_ID_BATCH, {"transaction_ids": ["txn-1"]}).status_code == 503
    assert post(client, SCORE, row_to_dict(ROWS[1].tolist())).status_code == 200


def test_an_unreachable_store_is_503_with_retry_after(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    down = start_redis(tmp_path)
    uri = down.uri
    down.stop()
    client = client_factory(feature_store_uri=uri, feature_store_timeout_ms=50)
    for path, body in (
        (BY_ID, {"transaction_id": "txn-1"}),
        (BY_ID_BATCH, {"transaction_ids": ["a"]}),
    ):
        response = post(client, path, body)
        assert response.status_code == 503
        assert response.json()["error"] == "feature_store_unavailable"
        assert response.headers["Retry-After"] == "1"
    assert client.get("/health").status_code == 200
    assert post(client, SCORE, row_to_dict(ROWS[0].tolist())).status_code == 200


def test_explain_without_reason_codes_is_422_before_any_lookup(
    client_factory: Callable[..., TestClient], model_path: Path, tmp_path: Path
) -> None:
    """An .onnx without the explain graph: explain=true is refused as on the raw routes, even
    with the store down (the request could never be answered, whatever Redis says)."""
    old = tmp_path / "fraud-model.onnx"
    old.write_bytes(split(model_path.with_suffix(".onnx").read_bytes()).plain)
    shutil.copy(card_path(model_path), card_path(old))
    down = start_redis(tmp_path)
    uri = down.uri
    down.stop()
    client = client_factory(model_path=old, feature_store_uri=uri, feature_store_timeout_ms=50)
    for path, body in (
        (BY_ID, {"transaction_id": "txn-1"}),
        (BY_ID_BATCH, {"transaction_ids": ["txn-1"]}),
    ):
        response = post(client, path, body, explain="true")
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["query", "explain"]
        assert post(client, path, body).status_code == 503  # not explained: the lookup is tried


def test_by_id_needs_the_key_and_counts_in_the_rate_limit(
    client_factory: Callable[..., TestClient], redis_server: RedisServer, store: Any
) -> None:
    client = client_factory(
        feature_store_uri=redis_server.uri, feature_store_prefix=PREFIX, rate_limit="2/minute"
    )
    assert client.post(BY_ID, json={"transaction_id": "txn-1"}).status_code == 403
    statuses = [post(client, BY_ID, {"transaction_id": "txn-1"}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_openapi_documents_the_by_id_routes(by_id_client: TestClient) -> None:
    schema = by_id_client.get("/openapi.json").json()
    for path, statuses in ((BY_ID, {"404", "501", "502", "503"}), (BY_ID_BATCH, {"501", "503"})):
        operation = schema["paths"][path]["post"]
        assert statuses <= set(operation["responses"])
        assert {parameter["name"] for parameter in operation["parameters"]} >= {
            "explain",
            "max_reasons",
        }
    assert "ByIdRequest" in schema["components"]["schemas"]
    json.dumps(schema)  # serialisable as served
