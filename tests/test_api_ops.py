"""/health, /health/live, /v1/model-info and /metrics in process; 503 degradation."""

import hashlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.card import card_path
from app.features import FEATURE_NAMES
from tests.conftest import HEADERS


def test_health_with_a_model(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "model_loaded": True}
    assert client.get("/health/live").status_code == 200


def test_health_and_metrics_need_no_key(client: TestClient) -> None:
    for path in ("/health", "/health/live", "/metrics"):
        assert client.get(path).status_code == 200


def test_head_on_the_health_and_metrics_routes_answers_as_get_without_a_body(
    client_factory: Any,
) -> None:
    served, unloaded = client_factory(), client_factory(model_path=Path("absent.joblib"))
    for client, ready in ((served, 200), (unloaded, 503)):
        for path, status in (
            ("/health", ready),
            ("/health/live", 200),
            ("/v2/health/ready", ready),
        ):
            head, get = client.head(path), client.get(path)
            assert (head.status_code, get.status_code) == (status, status), path
            assert head.headers["content-length"] == get.headers["content-length"]
            assert head.content == b""
    metrics = served.head("/metrics")  # its length moves with every request counted
    assert (metrics.status_code, metrics.content) == (200, b"")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert served.head("/v1/fraud-score").status_code == 405  # only the probes' routes


def broken_model(kind: str, model_path: Path, tmp_path: Path) -> Path:
    if kind == "missing":
        return tmp_path / "absent.joblib"
    target = tmp_path / "fraud-model.joblib"
    if kind == "corrupt":
        target.write_bytes(b"definitely not a pickle" * 50)
    elif kind == "truncated":
        target.write_bytes(model_path.read_bytes()[:5000])
    return target


@pytest.mark.parametrize("kind", ["missing", "corrupt", "truncated"])
def test_no_model_degrades_to_503(
    client_factory: Any, model_path: Path, tmp_path: Path, mock_body: dict[str, float], kind: str
) -> None:
    client = client_factory(model_path=broken_model(kind, model_path, tmp_path))

    health = client.get("/health")
    score = client.post("/v1/fraud-score", json=mock_body, headers=HEADERS)

    assert health.status_code == 503
    assert health.json() == {"status": "unhealthy", "model_loaded": False}
    assert score.status_code == 503
    assert score.json()["error"] == "model_unavailable"
    assert score.json()["detail"]
    assert client.get("/health/live").status_code == 200
    assert client.get("/v1/model-info", headers=HEADERS).status_code == 503


def test_no_model_still_checks_the_key_and_the_body(client_factory: Any, tmp_path: Path) -> None:
    client = client_factory(model_path=tmp_path / "absent.joblib")
    assert client.post("/v1/fraud-score", json={}).status_code == 403
    assert client.post("/v1/fraud-score", json={}, headers=HEADERS).status_code == 422


def test_digest_mismatch_is_503(client_factory: Any, mock_body: dict[str, float]) -> None:
    client = client_factory(model_sha256="f" * 64)
    assert client.get("/health").status_code == 503
    assert client.post("/v1/fraud-score", json=mock_body, headers=HEADERS).status_code == 503


def test_model_info(client: TestClient, model_path: Path) -> None:
    response = client.get("/v1/model-info", headers=HEADERS)

    assert response.status_code == 200
    info = response.json()
    assert set(info) == {
        "model-version", "trained-at", "sklearn-version", "engine", "explanation", "n-estimators",
        "features", "feature-importance", "threshold", "metrics", "artifact-sha256",
    }  # fmt: skip
    assert info["engine"] == "onnx"
    assert info["n-estimators"] == 20
    assert info["features"] == list(FEATURE_NAMES)
    assert set(info["feature-importance"]) == set(FEATURE_NAMES)
    assert all(isinstance(value, float) for value in info["feature-importance"].values())
    assert info["threshold"] == 50
    assert info["artifact-sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    metrics = info["metrics"]
    assert {"pr-auc", "roc-auc", "precision", "recall", "rows"} <= set(metrics)
    assert all(0 <= metrics[name] <= 1 for name in ("pr-auc", "roc-auc", "precision", "recall"))
    assert metrics["rows"] == 30_000
    assert info["trained-at"]
    assert info["sklearn-version"]


def test_model_info_for_an_onnx_artifact(client_factory: Any, model_path: Path) -> None:
    onnx_path = model_path.with_suffix(".onnx")
    info = client_factory(model_path=onnx_path).get("/v1/model-info", headers=HEADERS).json()
    assert info["engine"] == "onnx"
    assert info["artifact-sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert card_path(onnx_path) == card_path(model_path)


def test_model_info_reports_the_forced_engine_and_threshold(client_factory: Any) -> None:
    info = client_factory(model_engine="sklearn", fraud_threshold=35).get(
        "/v1/model-info", headers=HEADERS
    )
    assert info.json()["engine"] == "sklearn"
    assert info.json()["threshold"] == 35


def test_model_info_needs_a_key(client: TestClient) -> None:
    assert client.get("/v1/model-info").status_code == 403
    assert (
        client.get("/v1/model-info", headers={"X-API-Key": "nope-nope-nope-nope"}).status_code
        == 403
    )


def sample_value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_metrics_count_requests_predictions_and_ood(
    client: TestClient, mock_body: dict[str, float]
) -> None:
    before = client.get("/metrics").text
    client.post("/v1/fraud-score", json=mock_body, headers=HEADERS)
    client.post("/v1/fraud-score", json={**mock_body, "V4": 500.0}, headers=HEADERS)
    client.post("/v1/fraud-score/batch", json={"transactions": [mock_body] * 3}, headers=HEADERS)
    client.post("/v1/fraud-score", json={}, headers=HEADERS)
    after = client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return sample_value(after, name, **labels) - sample_value(before, name, **labels)

    route = {"route": "/v1/fraud-score", "method": "POST"}
    assert delta("fraud_http_requests_total", status="200", **route) == 2
    assert delta("fraud_http_requests_total", status="422", **route) == 1
    assert delta("fraud_http_request_duration_seconds_count", status="200", **route) == 2
    assert (
        delta("fraud_predictions_total", outcome="legitimate")
        + delta("fraud_predictions_total", outcome="fraud")
        == 5
    )
    assert delta("fraud_score_count") == 5
    assert delta("fraud_ood_warnings_total") == 1
    assert delta("fraud_batch_transactions_sum") == 3
    assert sample_value(after, "fraud_model_loaded") == 1
    assert sample_value(after, "fraud_model_info", engine="onnx", model_version="1.0.0") == 1
    assert sample_value(after, "fraud_score_baseline_stddev") > 0


def test_metrics_never_label_with_keys_or_ids(
    client: TestClient, mock_body: dict[str, float]
) -> None:
    client.post(
        "/v1/fraud-score", json=mock_body, headers={**HEADERS, "X-Request-ID": "trace-me-42"}
    )
    text = client.get("/metrics").text
    assert HEADERS["X-API-Key"] not in text
    assert "trace-me-42" not in text


def test_latency_buckets_resolve_1ms_to_1s(client: TestClient) -> None:
    client.get("/health")
    bounds = {
        float(sample.labels["le"])
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "fraud_http_request_duration_seconds_bucket"
    }
    assert min(bounds) == 0.001
    assert max(bound for bound in bounds if bound != float("inf")) == 1.0
    assert {0.005, 0.01, 0.05, 0.1, 0.15, 0.2, 0.5} <= bounds  # the alert thresholds are bounds


def test_openapi_documents_both_request_bodies(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["info"]["version"] == "1.0.0"
    transaction = schema["components"]["schemas"]["Transaction"]
    assert transaction["required"] == list(FEATURE_NAMES)
    assert transaction["additionalProperties"] is False
    batch = schema["components"]["schemas"]["BatchRequest"]["properties"]["transactions"]
    assert batch["maxItems"] == 1000
    assert batch["minItems"] == 1
    security = schema["paths"]["/v1/fraud-score"]["post"]["security"]
    assert security == [{"APIKeyHeader": []}]
    assert "security" not in schema["paths"]["/health"]["get"]
