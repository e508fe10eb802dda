"""The Open Inference Protocol under /v2, in process: answers equal /v1's, every error is OIP's."""

import gzip
import json
import logging
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from app.api.scoring import batch_body_limit
from app.features import FEATURE_NAMES
from app.synthetic import generate
from tests.conftest import HEADERS

INFER = "/v2/models/fraud/infer"
LENGTH = "Inference-Header-Content-Length"
MARK = 987.654321  # a feature value no error message may repeat
NO_KEY = "Missing or invalid API key: send it in the X-API-Key header"
NO_MODEL = "No model is loaded; the service cannot score until one is"
DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "BOOL": "|b1"}


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """Ordinary rows, fraud-like rows (a third are fraud) and one far outside training (OOD)."""
    features, _ = generate(rows=24, seed=3, fraud_rate=0.3)
    outlier = features[0].copy()
    outlier[4] = 500.0
    return np.vstack([features, outlier])


def tensor(rows: np.ndarray, datatype: str = "FP64", **fields: Any) -> dict[str, Any]:
    return {
        "name": "features",
        "datatype": datatype,
        "shape": list(rows.shape),
        "data": rows.ravel().tolist(),
        **fields,
    }


def infer(client: TestClient, body: Any, path: str = INFER, **headers: str | bytes) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers={**HEADERS, **headers})


def binary_request(
    rows: np.ndarray, datatype: str = "FP32", **document: Any
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body for `rows` and the header that delimits its JSON."""
    payload = np.ascontiguousarray(rows, dtype=DTYPES[datatype]).tobytes()
    entry = {
        "name": "features",
        "datatype": datatype,
        "shape": list(rows.shape),
        "parameters": {"binary_data_size": len(payload)},
    }
    header = json.dumps({"inputs": [entry], **document}).encode()
    return header + payload, {LENGTH: str(len(header))}


def decode(response: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The answer's JSON header and each output as an array, binary or JSON (test-side decoder)."""
    content = response.content
    length = int(response.headers.get(LENGTH, len(content)))
    header = json.loads(content[:length])
    offset, arrays = length, {}
    for output in header["outputs"]:
        dtype = np.dtype(DTYPES[output["datatype"]])
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = np.array(output["data"], dtype=dtype)
        else:
            array = np.frombuffer(content[offset : offset + size], dtype=dtype)
            offset += size
        arrays[output["name"]] = array.reshape(output["shape"])
    assert offset == len(content), "no stray bytes after the outputs"
    return header, arrays


def v1_results(client: TestClient, rows: np.ndarray, query: str = "") -> list[dict[str, Any]]:
    transactions = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in rows.tolist()]
    response = client.post(
        f"/v1/fraud-score/batch{query}", json={"transactions": transactions}, headers=HEADERS
    )
    assert response.status_code == 200
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def assert_equals_v1(arrays: dict[str, np.ndarray], expected: list[dict[str, Any]]) -> None:
    assert arrays["fraud_score"].tolist() == [result["fraud-score"] for result in expected]
    assert arrays["is_fraud"].tolist() == [result["is-fraud"] for result in expected]
    assert arrays["ood_warning"].tolist() == [result["ood-warning"] for result in expected]
    probability = arrays["fraud_probability"].astype(np.float64)
    assert np.rint(100 * probability).astype(int).tolist() == arrays["fraud_score"].tolist()


# --- health and metadata ------------------------------------------------------------------------


def test_health_and_server_metadata_are_open(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert client.get("/v2").json() == {
        "name": "fraud-scoring-service",
        "version": "1.0.0",
        "extensions": ["binary_tensor_data"],
    }
    for path in ("/v2/models/fraud/ready", "/v2/models/fraud/versions/1.0.0/ready"):
        response = client.get(path)
        assert (response.status_code, response.json()) == (200, {"ready": True})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/models/other/ready", "unknown model: this server serves 'fraud'"),
        (
            "/v2/models/fraud/versions/2.0.0/ready",
            "unknown version of model 'fraud': it serves 1.0.0",
        ),
        ("/v2/models/Fraud", "unknown model: this server serves 'fraud'"),
        ("/v2/models/fraud/versions/1.0", "unknown version of model 'fraud': it serves 1.0.0"),
    ],
)
def test_unknown_model_or_version_is_404(client: TestClient, path: str, message: str) -> None:
    response = client.get(path, headers=HEADERS)
    assert (response.status_code, response.json()) == (404, {"error": message})


def test_model_metadata(client: TestClient) -> None:
    explains = client.app.state.scorer.explains  # type: ignore[attr-defined]
    outputs = [
        {"name": "fraud_probability", "datatype": "FP32", "shape": [-1]},
        {"name": "fraud_score", "datatype": "INT32", "shape": [-1]},
        {"name": "is_fraud", "datatype": "BOOL", "shape": [-1]},
        {"name": "ood_warning", "datatype": "BOOL", "shape": [-1]},
    ]
    if explains:
        outputs.append({"name": "contributions", "datatype": "FP32", "shape": [-1, 30]})
    expected = {
        "name": "fraud",
        "versions": ["1.0.0"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 30]}],
        "outputs": outputs,
        "parameters": {
            "features": ",".join(FEATURE_NAMES),
            "input_datatypes": "FP32,FP64",
            "threshold": 50.0,
        },
    }
    for path in ("/v2/models/fraud", "/v2/models/fraud/versions/1.0.0"):
        response = client.get(path, headers=HEADERS)
        assert response.status_code == 200
        assert response.json() == expected


def test_metadata_version_follows_model_version(client_factory: Any) -> None:
    client = client_factory(model_version="2026.11-rc1")
    assert client.get("/v2/models/fraud", headers=HEADERS).json()["versions"] == ["2026.11-rc1"]
    assert client.get("/v2/models/fraud/versions/2026.11-rc1/ready").status_code == 200
    assert client.get("/v2/models/fraud/versions/1.0.0/ready").status_code == 404


# --- inference: values equal /v1's ---------------------------------------------------------------


def test_json_infer_equals_the_v1_batch(client: TestClient, rows: np.ndarray) -> None:
    response = infer(client, {"inputs": [tensor(rows)]})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert LENGTH.lower() not in response.headers
    header, arrays = decode(response)
    assert header["model_name"] == "fraud"
    assert header["model_version"] == "1.0.0"
    assert "id" not in header
    assert [output["name"] for output in header["outputs"]] == [
        "fraud_probability",
        "fraud_score",
        "is_fraud",
        "ood_warning",
    ]
    assert [output["shape"] for output in header["outputs"]] == [[len(rows)]] * 4
    expected = v1_results(client, rows)
    assert_equals_v1(arrays, expected)
    assert {result["ood-warning"] for result in expected} == {True, False}
    assert {result["is-fraud"] for result in expected} == {True, False}


def test_probability_is_the_engines(client: TestClient, rows: np.ndarray) -> None:
    scorer = client.app.state.scorer  # type: ignore[attr-defined]
    _, arrays = decode(infer(client, {"inputs": [tensor(rows)]}))
    expected = scorer.engine.fraud_probability(rows.astype(np.float32)).astype(np.float32)
    assert arrays["fraud_probability"].tolist() == expected.tolist()


def test_nested_data_equals_flat(client: TestClient, rows: np.ndarray) -> None:
    flat = infer(client, {"inputs": [tensor(rows)]})
    nested = infer(client, {"inputs": [tensor(rows, data=rows.tolist())]})
    assert nested.status_code == 200
    assert nested.content == flat.content


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_binary_infer_equals_the_v1_batch(
    client: TestClient, rows: np.ndarray, datatype: str
) -> None:
    sent = rows.astype(DTYPES[datatype]).astype(np.float64)  # the values as the tensor holds them
    body, headers = binary_request(rows, datatype, parameters={"binary_data_output": True})

    response = infer(client, body, **headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    header, arrays = decode(response)
    assert all("data" not in output for output in header["outputs"])
    assert_equals_v1(arrays, v1_results(client, sent))


def test_json_data_of_an_fp32_tensor_is_scored_as_sent(
    client: TestClient, rows: np.ndarray
) -> None:
    _, fp32 = decode(infer(client, {"inputs": [tensor(rows, "FP32")]}))
    assert_equals_v1(fp32, v1_results(client, rows))


def test_binary_output_bytes(client: TestClient, rows: np.ndarray) -> None:
    scorer = client.app.state.scorer  # type: ignore[attr-defined]
    body, headers = binary_request(rows[:3], parameters={"binary_data_output": True})
    response = infer(client, body, **headers)

    length = int(response.headers[LENGTH])
    header = json.loads(response.content[:length])
    payload = response.content[length:]
    sizes = [output["parameters"]["binary_data_size"] for output in header["outputs"]]
    assert sizes == [12, 12, 3, 3]  # FP32 and INT32: 4 bytes per row; BOOL: one byte
    assert len(payload) == sum(sizes)
    probability = scorer.engine.fraud_probability(rows[:3].astype(np.float32))
    assert payload[:12] == probability.astype("<f4").tobytes()
    _, arrays = decode(response)
    scores = arrays["fraud_score"].tolist()
    assert scores == [result["fraud-score"] for result in v1_results(client, rows[:3])]
    assert payload[12:24] == b"".join(score.to_bytes(4, "little") for score in scores)
    assert payload[24:27] == bytes(int(flag) for flag in arrays["is_fraud"].tolist())
    assert set(payload[24:30]) <= {0, 1}


def test_output_selection_in_request_order(client: TestClient, rows: np.ndarray) -> None:
    outputs = [
        {"name": "ood_warning", "parameters": {"binary_data": True}},
        {"name": "fraud_score"},
    ]
    response = infer(client, {"inputs": [tensor(rows)], "outputs": outputs})

    assert response.headers["content-type"] == "application/octet-stream"
    header, arrays = decode(response)
    assert [output["name"] for output in header["outputs"]] == ["ood_warning", "fraud_score"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": len(rows)}
    assert "data" in header["outputs"][1]
    expected = v1_results(client, rows)
    assert arrays["ood_warning"].tolist() == [result["ood-warning"] for result in expected]
    assert arrays["fraud_score"].tolist() == [result["fraud-score"] for result in expected]


def test_an_output_overrides_binary_data_output(client: TestClient, rows: np.ndarray) -> None:
    body = {
        "inputs": [tensor(rows[:2])],
        "parameters": {"binary_data_output": True},
        "outputs": [
            {"name": "is_fraud", "parameters": {"binary_data": False}},
            {"name": "fraud_score"},
        ],
    }
    header, arrays = decode(infer(client, body))
    expected = v1_results(client, rows[:2])
    assert header["outputs"][0]["data"] == [result["is-fraud"] for result in expected]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert arrays["fraud_score"].tolist() == [result["fraud-score"] for result in expected]


def test_an_empty_outputs_list_is_the_default(client: TestClient, rows: np.ndarray) -> None:
    default = infer(client, {"inputs": [tensor(rows)]})
    empty = infer(client, {"inputs": [tensor(rows)], "outputs": []})
    assert empty.content == default.content


def test_id_is_echoed(client: TestClient, rows: np.ndarray) -> None:
    header, _ = decode(infer(client, {"id": "req-42 ü", "inputs": [tensor(rows[:1])]}))
    assert header["id"] == "req-42 ü"
    body, headers = binary_request(rows[:1], id="bin-7")
    assert decode(infer(client, body, **headers))[0]["id"] == "bin-7"


def test_the_version_path_infers(client: TestClient, rows: np.ndarray) -> None:
    plain = infer(client, {"inputs": [tensor(rows)]})
    versioned = infer(client, {"inputs": [tensor(rows)]}, "/v2/models/fraud/versions/1.0.0/infer")
    assert versioned.status_code == 200
    assert versioned.content == plain.content


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/models/other/infer", "unknown model: this server serves 'fraud'"),
        ("/v2/models/fraud/versions/9/infer", "unknown version of model 'fraud': it serves 1.0.0"),
    ],
)
def test_infer_of_an_unknown_model_is_404_before_the_body(
    client: TestClient, path: str, message: str
) -> None:
    response = infer(client, b"not even json", path)
    assert (response.status_code, response.json()) == (404, {"error": message})


def test_contributions_equal_the_v1_reasons(client: TestClient, rows: np.ndarray) -> None:
    """With reason codes: the /v1 reasons' contributions; without: a clean 400."""
    scorer = client.app.state.scorer  # type: ignore[attr-defined]
    body = {"inputs": [tensor(rows)], "outputs": [{"name": "contributions"}]}

    response = infer(client, body)

    if not scorer.explains:
        assert (response.status_code, response.json()) == (
            400,
            {
                "error": "output 'contributions' is not available: the served model carries no "
                "reason codes"
            },
        )
        return
    assert response.status_code == 200
    header, arrays = decode(response)
    assert header["outputs"][0]["shape"] == [len(rows), 30]
    expected = v1_results(client, rows, "?explain=true&max_reasons=30")
    for row, result in zip(arrays["contributions"].tolist(), expected, strict=True):
        by_feature = {reason["feature"]: reason["contribution"] for reason in result["reasons"]}
        assert row == pytest.approx([by_feature[name] for name in FEATURE_NAMES], abs=1e-5)
    assert header["outputs"][0]["parameters"]["baseline"] == expected[0]["baseline"]


def test_binary_contributions(client: TestClient, rows: np.ndarray) -> None:
    body, headers = binary_request(
        rows, outputs=[{"name": "contributions", "parameters": {"binary_data": True}}]
    )
    response = infer(client, body, **headers)
    if not client.app.state.scorer.explains:  # type: ignore[attr-defined]
        assert response.status_code == 400
        assert response.json()["error"].startswith("output 'contributions' is not available")
        return
    header, arrays = decode(response)
    assert header["outputs"][0]["parameters"]["binary_data_size"] == len(rows) * 30 * 4
    _, json_arrays = decode(
        infer(client, {"inputs": [tensor(rows, "FP32")], "outputs": [{"name": "contributions"}]})
    )
    assert arrays["contributions"].tolist() == json_arrays["contributions"].tolist()


class ExplainingEngine:
    """The served engine plus made-up additive contributions: exercises the plumbing whatever
    the served model carries (the real tree-path values are checked above once they exist)."""

    name = "onnx"
    explanation = "tree-path"
    baseline = 12.5

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def fraud_probability(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.engine.fraud_probability(matrix))

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probability = self.fraud_probability(matrix)
        weights = np.linspace(-1.0, 2.0, 30) + matrix[:, :1] / 1e5  # differ by row and feature
        contributions = (
            weights * ((100 * probability - self.baseline) / weights.sum(axis=1))[:, None]
        )
        return probability, contributions


def test_contributions_plumbing_with_an_explaining_engine(
    client: TestClient, rows: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = client.app.state.scorer  # type: ignore[attr-defined]
    monkeypatch.setattr(scorer, "engine", ExplainingEngine(scorer.engine))
    outputs = [
        {"name": "fraud_score"},
        {"name": "contributions", "parameters": {"binary_data": True}},
    ]
    body, headers = binary_request(rows, "FP64", outputs=outputs)

    response = infer(client, body, **headers)

    assert response.status_code == 200
    header, arrays = decode(response)
    assert header["outputs"][1]["shape"] == [len(rows), 30]
    assert header["outputs"][1]["parameters"] == {
        "baseline": 12.5,
        "binary_data_size": len(rows) * 30 * 4,
    }
    expected = v1_results(client, rows, "?explain=true&max_reasons=30")
    assert arrays["fraud_score"].tolist() == [result["fraud-score"] for result in expected]
    for row, result in zip(arrays["contributions"].tolist(), expected, strict=True):
        by_feature = {reason["feature"]: reason["contribution"] for reason in result["reasons"]}
        assert row == pytest.approx([by_feature[name] for name in FEATURE_NAMES], rel=1e-6)
    assert client.get("/v2/models/fraud", headers=HEADERS).json()["outputs"][-1] == {
        "name": "contributions",
        "datatype": "FP32",
        "shape": [-1, 30],
    }


def test_max_batch_size_rows_of_fp64_fit_the_body_limit(client: TestClient) -> None:
    rows = generate(rows=1000, seed=11)[0]
    body, headers = binary_request(rows, "FP64")
    assert len(body) < batch_body_limit(1000)

    response = infer(client, body, **headers)

    assert response.status_code == 200
    _, arrays = decode(response)
    assert arrays["fraud_score"].shape == (1000,)
    assert_equals_v1(arrays, v1_results(client, rows))


# --- errors: 400 for every bad tensor -------------------------------------------------------------

ROW = [MARK] * 30


def request_with(**fields: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "features", "datatype": "FP64", "shape": [1, 30], "data": ROW, **fields}
        ]
    }


BAD_JSON = {
    "wrong input name": (
        request_with(name="x"),
        "unknown input: the model's one input is 'features'",
    ),
    "no input name": (
        {"inputs": [{"datatype": "FP64", "shape": [1, 30], "data": ROW}]},
        "unknown input: the model's one input is 'features'",
    ),
    "INT32": (request_with(datatype="INT32"), "input 'features' must be FP32 or FP64"),
    "FP16": (request_with(datatype="FP16"), "input 'features' must be FP32 or FP64"),
    "lower-case fp32": (request_with(datatype="fp32"), "input 'features' must be FP32 or FP64"),
    "datatype not a string": (request_with(datatype=32), "input 'features' must be FP32 or FP64"),
    "29 columns": (
        request_with(shape=[1, 29], data=ROW[:29]),
        "input 'features' must have shape [N, 30]",
    ),
    "one dimension": (request_with(shape=[30]), "input 'features' must have shape [N, 30]"),
    "three dimensions": (
        request_with(shape=[1, 30, 1]),
        "input 'features' must have shape [N, 30]",
    ),
    "float dimension": (request_with(shape=[1.0, 30]), "input 'features' must have shape [N, 30]"),
    "boolean dimension": (
        request_with(shape=[True, 30]),
        "input 'features' must have shape [N, 30]",
    ),
    "string dimension": (request_with(shape=["1", 30]), "input 'features' must have shape [N, 30]"),
    "no shape": (
        {"inputs": [{"name": "features", "datatype": "FP64", "data": ROW}]},
        "input 'features' must have shape [N, 30]",
    ),
    "zero rows": (
        request_with(shape=[0, 30], data=[]),
        "input 'features' must have 1 to 1000 rows (shape [N, 30])",
    ),
    "negative rows": (
        request_with(shape=[-1, 30]),
        "input 'features' must have 1 to 1000 rows (shape [N, 30])",
    ),
    "over MAX_BATCH_SIZE": (
        request_with(shape=[1001, 30], data=ROW * 1001),
        "input 'features' must have 1 to 1000 rows (shape [N, 30])",
    ),
    "too few values": (
        request_with(data=ROW[:29]),
        "input 'features' has 29 values; shape [1, 30] takes 30",
    ),
    "too many values": (
        request_with(data=ROW * 2),
        "input 'features' has 60 values; shape [1, 30] takes 30",
    ),
    "values for fewer rows": (
        request_with(shape=[2, 30]),
        "input 'features' has 30 values; shape [2, 30] takes 60",
    ),
    "nested row too short": (
        request_with(data=[ROW[:29]]),
        "input 'features': nested 'data' must be 1 row of 30 numbers",
    ),
    "nested rows fewer than shape": (
        request_with(shape=[2, 30], data=[ROW]),
        "input 'features': nested 'data' must be 2 rows of 30 numbers",
    ),
    "nested and flat mixed": (
        request_with(shape=[2, 30], data=[ROW, *ROW]),
        "input 'features': nested 'data' must be 2 rows of 30 numbers",
    ),
    "three levels": (
        request_with(data=[[[MARK]] * 30]),
        "input 'features': every value must be a JSON number (not a string, boolean, null or list)",
    ),
    "a list inside flat data": (
        request_with(data=[*ROW[:29], [MARK]]),
        "input 'features': every value must be a JSON number (not a string, boolean, null or list)",
    ),
    "a string": (
        request_with(data=[*ROW[:29], "1.5"]),
        "input 'features': every value must be a JSON number (not a string, boolean, null or list)",
    ),
    "a boolean": (
        request_with(data=[True, *ROW[:29]]),
        "input 'features': every value must be a JSON number (not a string, boolean, null or list)",
    ),
    "null": (
        request_with(data=[*ROW[:29], None]),
        "input 'features': every value must be a JSON number (not a string, boolean, null or list)",
    ),
    "no data": (
        {"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 30]}]},
        "input 'features' needs 'data' (a list) or binary_data_size",
    ),
    "data not a list": (
        request_with(data=MARK),
        "input 'features' needs 'data' (a list) or binary_data_size",
    ),
    "no inputs": ({}, "'inputs' must be a list of one tensor, 'features'"),
    "empty inputs": ({"inputs": []}, "'inputs' must be a list of one tensor, 'features'"),
    "two inputs": (
        {"inputs": request_with()["inputs"] * 2},
        "'inputs' must be a list of one tensor, 'features'",
    ),
    "input not an object": ({"inputs": [ROW]}, "'inputs' must be a list of one tensor, 'features'"),
    "not an object": ([request_with()], "the inference request must be a JSON object"),
    "id not a string": ({**request_with(), "id": 7}, "'id' must be a string"),
    "parameters not an object": (
        {**request_with(), "parameters": [MARK]},
        "'parameters' of the request must be an object",
    ),
    "binary_data_output not a boolean": (
        {**request_with(), "parameters": {"binary_data_output": "yes"}},
        "'binary_data_output' of the request must be true or false",
    ),
    "binary_data_output null": (
        {**request_with(), "parameters": {"binary_data_output": None}},
        "'binary_data_output' of the request must be true or false",
    ),
    "input parameters not an object": (
        request_with(parameters=MARK),
        "'parameters' of input 'features' must be an object",
    ),
    "shared memory input": (
        request_with(parameters={"shared_memory_region": "r"}),
        "the shared-memory extension is not supported (input 'features')",
    ),
    "unknown output": (
        {**request_with(), "outputs": [{"name": "probability"}]},
        "unknown output: the model's outputs are fraud_probability, fraud_score, is_fraud, "
        "ood_warning, contributions",
    ),
    "output without a name": (
        {**request_with(), "outputs": [{}]},
        "unknown output: the model's outputs are fraud_probability, fraud_score, is_fraud, "
        "ood_warning, contributions",
    ),
    "outputs not a list": (
        {**request_with(), "outputs": "fraud_score"},
        "'outputs' must be a list of objects",
    ),
    "output not an object": (
        {**request_with(), "outputs": ["fraud_score"]},
        "'outputs' must be a list of objects",
    ),
    "output twice": (
        {**request_with(), "outputs": [{"name": "fraud_score"}, {"name": "fraud_score"}]},
        "each output may be requested once",
    ),
    "binary_data not a boolean": (
        {**request_with(), "outputs": [{"name": "fraud_score", "parameters": {"binary_data": 1}}]},
        "'binary_data' of output 'fraud_score' must be true or false",
    ),
    "binary_data null": (
        {
            **request_with(),
            "outputs": [{"name": "fraud_score", "parameters": {"binary_data": None}}],
        },
        "'binary_data' of output 'fraud_score' must be true or false",
    ),
    "classification": (
        {
            **request_with(),
            "outputs": [{"name": "fraud_score", "parameters": {"classification": 2}}],
        },
        "the classification extension is not supported (output 'fraud_score')",
    ),
}


@pytest.mark.parametrize(("body", "message"), list(BAD_JSON.values()), ids=list(BAD_JSON))
def test_bad_json_tensors_are_400(client: TestClient, body: Any, message: str) -> None:
    response = infer(client, body)
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert "987.65" not in response.text


NOT_JSON = (
    "the inference request is not valid JSON (at character {}); NaN, Infinity and numbers beyond "
    "a double's range are not JSON numbers"
)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400])
def test_non_finite_json_values_are_400(client: TestClient, literal: str) -> None:
    text = json.dumps(request_with(data=["__MARK__", *ROW[:29]])).replace('"__MARK__"', literal)
    response = infer(client, text.encode())
    assert response.status_code == 400
    # orjson reports where in the literal it gave up: the literal's first or a later character.
    position = int(
        re.fullmatch(re.escape(NOT_JSON).replace(r"\{\}", r"(\d+)"), response.json()["error"])[1]
    )  # type: ignore[index]
    assert text.index(literal) <= position < text.index(literal) + len(literal)


@pytest.mark.parametrize(
    ("body", "position"),
    [
        (b"", 0),
        (b"{", 1),
        (b"\xff\xfe", 0),
        (b'{"id": "\xff"}', 8),  # where the text stops being UTF-8
        (b"[1, 2", 5),
        (b'{"inputs": [}', 12),
    ],
)
def test_malformed_json_is_400(client: TestClient, body: bytes, position: int) -> None:
    response = infer(client, body)
    assert (response.status_code, response.json()) == (400, {"error": NOT_JSON.format(position)})


# --- errors: the binary extension ----------------------------------------------------------------


NOT_A_BYTE_COUNT = "binary_data_size must be a byte count (an integer from 0 to 2**64 - 1)"


def binary_case(
    payload: bytes,
    size: Any,
    shape: tuple[int, int] = (1, 30),
    datatype: str = "FP32",
    **extra: Any,
) -> bytes:
    entry = {
        "name": "features",
        "datatype": datatype,
        "shape": list(shape),
        "parameters": {"binary_data_size": size},
        **extra,
    }
    return json.dumps({"inputs": [entry]}).encode() + payload


@pytest.mark.parametrize("rows", [np.ones((2, 30)), np.zeros((2, 30))], ids=["ones", "zeros"])
def test_binary_tensors_without_their_header_length_say_so(
    client: TestClient, rows: np.ndarray
) -> None:
    # 1.0 as FP32 is not UTF-8 text; 0.0 is (NUL bytes): both follow a whole JSON document.
    body, headers = binary_request(rows)
    response = infer(client, body)
    assert (response.status_code, response.json()) == (
        400,
        {
            "error": f"the inference request has bytes after its JSON (at character "
            f"{headers[LENGTH]}): binary tensors need the {LENGTH} header"
        },
    )


def test_a_header_length_given_twice_must_agree(client: TestClient) -> None:
    body, headers = binary_request(np.ones((2, 30)))
    length = headers[LENGTH]
    twice = [(LENGTH, length), (LENGTH, str(int(length) + 5))]
    raw_headers = [*HEADERS.items(), *twice]
    response = client.post(INFER, content=body, headers=raw_headers)
    assert (response.status_code, response.json()) == (
        400,
        {"error": f"{LENGTH} is given 2 times, with different values"},
    )
    same = client.post(INFER, content=body, headers=[*HEADERS.items(), *[(LENGTH, length)] * 2])
    assert same.status_code == 200


FP32_ROW = np.full(30, MARK, dtype="<f4").tobytes()
FP64_ROW = np.full(30, MARK, dtype="<f8").tobytes()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            binary_case(FP32_ROW[:-4], 120),
            "116 bytes follow the JSON header; binary_data_size says 120",
        ),
        (
            binary_case(FP32_ROW + b"\0", 120),
            "121 bytes follow the JSON header; binary_data_size says 120",
        ),
        (binary_case(FP32_ROW, 116), "binary_data_size is 116 bytes; [1, 30] of FP32 takes 120"),
        (
            binary_case(FP32_ROW, 120, datatype="FP64"),
            "binary_data_size is 120 bytes; [1, 30] of FP64 takes 240",
        ),
        (
            binary_case(FP64_ROW, 240, shape=(2, 30), datatype="FP64"),
            "binary_data_size is 240 bytes; [2, 30] of FP64 takes 480",
        ),
        (binary_case(FP32_ROW, -120), NOT_A_BYTE_COUNT),
        (binary_case(FP32_ROW, True), NOT_A_BYTE_COUNT),
        (binary_case(FP32_ROW, "120"), NOT_A_BYTE_COUNT),
        (binary_case(FP32_ROW, 120.0), NOT_A_BYTE_COUNT),
        (binary_case(FP32_ROW, None), NOT_A_BYTE_COUNT),  # null is not absent
        (binary_case(FP32_ROW, 2**64), NOT_A_BYTE_COUNT),  # JSON parsers read it as a float
        (
            binary_case(FP32_ROW, 120, data=[MARK] * 30),
            "input 'features' has both 'data' and binary_data_size",
        ),
        (binary_case(FP32_ROW, 120, shape=(1, 31)), "input 'features' must have shape [N, 30]"),
    ],
)
def test_bad_binary_tensors_are_400(client: TestClient, body: bytes, message: str) -> None:
    header_length = body.index(b"}]}") + 3
    response = infer(client, body, **{LENGTH: str(header_length)})
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert "987.65" not in response.text


def test_binary_size_without_the_header_finds_no_payload(client: TestClient) -> None:
    response = infer(client, binary_case(b"", 120))
    assert response.json() == {"error": "0 bytes follow the JSON header; binary_data_size says 120"}


def test_bytes_after_the_header_need_a_binary_input(client: TestClient) -> None:
    header = json.dumps(request_with()).encode()
    response = infer(client, header + FP32_ROW, **{LENGTH: str(len(header))})
    assert (response.status_code, response.json()) == (
        400,
        {"error": "120 bytes follow the JSON header, but no input has binary_data_size"},
    )


@pytest.mark.parametrize(
    "value", ["abc", "-5", "1.5", "", "0x10", "١٢".encode(), "²".encode(), "9" * 30, "1e3"]
)
def test_a_bad_header_length_is_400(client: TestClient, value: str | bytes) -> None:
    response = infer(client, binary_case(FP32_ROW, 120), **{LENGTH: value})
    assert (response.status_code, response.json()) == (
        400,
        {"error": "Inference-Header-Content-Length must be a decimal byte count"},
    )


def test_a_header_length_beyond_the_body_is_400(client: TestClient) -> None:
    body = binary_case(FP32_ROW, 120)
    response = infer(client, body, **{LENGTH: str(len(body) + 1)})
    assert response.json() == {
        "error": f"Inference-Header-Content-Length is {len(body) + 1} bytes; the body has only "
        f"{len(body)}"
    }


def test_a_header_length_inside_the_json_is_400(client: TestClient) -> None:
    response = infer(client, binary_case(FP32_ROW, 120), **{LENGTH: "10"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("the inference request is not valid JSON (at ")


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_binary_values_are_400(client: TestClient, datatype: str, bad: float) -> None:
    values = np.full((2, 30), MARK)
    values[1, 7] = bad
    body, headers = binary_request(values, datatype)
    response = infer(client, body, **headers)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "input 'features' holds a non-finite value (NaN or infinity)"},
    )


def test_fp32_max_and_beyond_fp32_in_fp64_are_scored(client: TestClient, rows: np.ndarray) -> None:
    values = rows[:2].copy()
    values[0, 29] = 1e300  # finite as FP64; the model compares it as float32's largest value
    body, headers = binary_request(values, "FP64")
    _, arrays = decode(infer(client, body, **headers))
    assert_equals_v1(arrays, v1_results(client, values))
    assert arrays["ood_warning"].tolist()[0] is True


COMPRESSORS = {"gzip": gzip.compress, "deflate": zlib.compress, "x-gzip": gzip.compress}


@pytest.mark.parametrize("coding", sorted(COMPRESSORS))
def test_a_gzip_or_deflate_body_is_answered_as_the_same_body_uncompressed(
    client: TestClient, rows: np.ndarray, coding: str
) -> None:
    """tritonclient's request_compression_algorithm: JSON and binary bodies alike."""
    compress = COMPRESSORS[coding]
    document = json.dumps({"id": "zip", "inputs": [tensor(rows)]}).encode()
    binary, headers = binary_request(rows)
    for body, extra in ((document, {}), (binary, headers)):
        plain = infer(client, body, **extra)
        compressed = infer(client, compress(body), **extra, **{"Content-Encoding": coding})
        assert (compressed.status_code, compressed.content) == (200, plain.content)


def test_content_encodings_are_read_as_http_lists(client: TestClient, rows: np.ndarray) -> None:
    document = json.dumps({"inputs": [tensor(rows[:1])]}).encode()
    for coding in ("identity", "GZIP", " gzip , identity"):
        body = document if coding == "identity" else gzip.compress(document)
        assert infer(client, body, **{"Content-Encoding": coding}).status_code == 200


@pytest.mark.parametrize("coding", ["br", "compress", "zstd", "gzip, gzip", "gzip, deflate"])
def test_another_content_encoding_is_400_saying_which_are_accepted(
    client: TestClient, rows: np.ndarray, coding: str
) -> None:
    body = gzip.compress(json.dumps({"inputs": [tensor(rows[:1])]}).encode())
    response = infer(client, body, **{"Content-Encoding": coding})
    assert (response.status_code, response.json()) == (
        400,
        {
            "error": "a request body may be compressed with one of gzip, deflate "
            "(Content-Encoding), or not at all"
        },
    )
    assert response.headers["Accept-Encoding"] == "gzip, deflate"


def test_a_body_that_does_not_decompress_is_400(client: TestClient, rows: np.ndarray) -> None:
    document = json.dumps({"inputs": [tensor(rows[:1])]}).encode()
    gzipped, deflated = gzip.compress(document), zlib.compress(document)
    cases = [
        ("gzip", document, "the request body does not decompress"),
        ("deflate", gzipped, "the request body does not decompress"),
        ("gzip", b"", "the request body ends before its compressed data does"),
        ("gzip", gzipped[:-12], "the request body ends before its compressed data does"),
        ("deflate", deflated[:-3], "the request body ends before its compressed data does"),
        ("gzip", gzipped + b"{}", "the request body has bytes after its compressed data"),
        # Two gzip members, legal in a file: refused, since each would cost a new inflater.
        (
            "gzip",
            gzip.compress(document[:9]) + gzip.compress(document[9:]),
            "the request body has bytes after its compressed data",
        ),
        ("deflate", deflated + b"{}", "the request body has bytes after its compressed data"),
    ]
    for coding, body, message in cases:
        response = infer(client, body, **{"Content-Encoding": coding})
        assert (response.status_code, response.json()) == (400, {"error": message}), coding


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_body_that_decompresses_past_the_limit_is_413(client_factory: Any, coding: str) -> None:
    """A few kilobytes that would unpack into megabytes are refused once the limit is passed."""
    client = client_factory(max_batch_size=1)
    limit = batch_body_limit(1)
    bomb = COMPRESSORS[coding](b" " * (100 * limit))
    assert len(bomb) < limit // 10
    response = infer(client, bomb, **{"Content-Encoding": coding})
    assert (response.status_code, response.json()) == (
        413,
        {"error": f"Request body larger than {limit} bytes once decompressed"},
    )
    at_the_limit = COMPRESSORS[coding](b" " * limit)  # whitespace: then not a document, a 400
    assert infer(client, at_the_limit, **{"Content-Encoding": coding}).status_code == 400


def test_a_validation_error_under_v2_is_an_oip_400(client: TestClient) -> None:
    """The handlers render by path: FastAPI's own 422s (none of the /v2 routes raises one) too."""

    async def invalid() -> None:
        raise RequestValidationError([{"loc": ("query", "x"), "msg": "bad x", "type": "t"}])

    client.app.add_api_route("/v2/validation-probe", invalid)  # type: ignore[attr-defined]
    client.app.add_api_route("/v1/validation-probe", invalid)  # type: ignore[attr-defined]
    response = client.get("/v2/validation-probe")
    assert (response.status_code, response.json()) == (400, {"error": "bad x"})
    v1 = client.get("/v1/validation-probe")
    assert v1.status_code == 422
    assert v1.json() == {"detail": [{"loc": ["query", "x"], "msg": "bad x", "type": "t"}]}


# --- errors shared with /v1: key, rate limit, body size, model ---------------------------------


def test_a_missing_or_wrong_key_is_403_in_oip_shape(client: TestClient) -> None:
    for headers in ({}, {"X-API-Key": "wrong-key-wrong-key-1"}, {"X-API-Key": ""}):
        for response in (
            client.get("/v2/models/fraud", headers=headers),
            client.post(INFER, content=b"{}", headers=headers),
        ):
            assert (response.status_code, response.json()) == (403, {"error": NO_KEY})
    v1 = client.post("/v1/fraud-score", json={})
    assert v1.json() == {"detail": NO_KEY, "error": "invalid_api_key"}


def test_over_the_rate_limit_is_429(client_factory: Any, rows: np.ndarray) -> None:
    client = client_factory(rate_limit="2/minute")
    for _ in range(2):
        assert infer(client, {"inputs": [tensor(rows[:1])]}).status_code == 200
    response = infer(client, {"inputs": [tensor(rows[:1])]})
    assert (response.status_code, response.json()) == (
        429,
        {"error": "Rate limit exceeded: 2/minute"},
    )
    assert int(response.headers["Retry-After"]) >= 1
    assert client.get("/v2/models/fraud", headers=HEADERS).status_code == 429
    assert client.get("/v2/health/ready").status_code == 200  # open routes are not limited


def test_a_body_over_the_limit_is_413(client_factory: Any) -> None:
    client = client_factory(max_batch_size=1)
    limit = batch_body_limit(1)
    response = infer(client, b" " * (limit + 1))
    assert (response.status_code, response.json()) == (
        413,
        {"error": f"Request body larger than {limit} bytes"},
    )


def test_without_a_model(client_factory: Any, tmp_path: Path, rows: np.ndarray) -> None:
    client = client_factory(model_path=tmp_path / "absent.joblib")
    for path in (
        "/v2/health/ready",
        "/v2/models/fraud/ready",
        "/v2/models/fraud/versions/1.0.0/ready",
    ):
        response = client.get(path)
        assert (response.status_code, response.json()) == (503, {"ready": False})
    assert client.get("/v2/health/live").json() == {"live": True}
    for response in (
        infer(client, {"inputs": [tensor(rows[:1])]}),
        client.get("/v2/models/fraud", headers=HEADERS),
    ):
        assert (response.status_code, response.json()) == (503, {"error": NO_MODEL})
    # The body is checked before the model, as on /v1.
    assert infer(client, {"inputs": []}).status_code == 400


def test_unknown_paths_and_methods_answer_in_oip_shape(client: TestClient) -> None:
    missing = client.get("/v2/models/fraud/stats", headers=HEADERS)
    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})
    wrong_method = client.put(INFER, headers=HEADERS)
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"error": "Method Not Allowed"})
    assert wrong_method.headers["allow"] == "POST"
    assert client.get("/v1/nothing").json() == {"detail": "Not Found"}
    assert client.get("/v2x").json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v2/", {"error": "Not Found"}),
        ("GET", "/v2/models/fraud/", {"error": "Not Found"}),
        ("POST", "/v2/models/fraud/infer/", {"error": "Not Found"}),
        ("POST", "/v1/fraud-score/", {"detail": "Not Found"}),
        ("GET", "/health/", {"detail": "Not Found"}),
    ],
)
def test_a_trailing_slash_is_an_unknown_path_not_a_redirect(
    client: TestClient, method: str, path: str, body: dict[str, str]
) -> None:
    # A redirect would be built from the client's Host header, and with http behind TLS.
    response = client.request(
        method, path, headers={**HEADERS, "Host": "evil.example"}, follow_redirects=False
    )
    assert (response.status_code, response.json()) == (404, body)
    assert "location" not in response.headers


# --- metrics, logs, OpenAPI ---------------------------------------------------------------------


def counter(client: TestClient, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_count_oip_rows_like_v1(client: TestClient, rows: np.ndarray) -> None:
    route = {"route": "/v2/models/{model_name}/infer", "method": "POST"}
    before = {
        "scored": counter(client, "fraud_predictions_total"),
        "ood": counter(client, "fraud_ood_warnings_total"),
        "batch": counter(client, "fraud_batch_transactions_sum"),
        "ok": counter(client, "fraud_http_requests_total", status="200", **route),
        "bad": counter(client, "fraud_http_requests_total", status="400", **route),
    }
    infer(client, {"inputs": [tensor(rows)]})
    infer(client, {"inputs": []})
    ood = sum(result["ood-warning"] for result in v1_results(client, rows))

    assert counter(client, "fraud_predictions_total") - before["scored"] == 2 * len(rows)
    assert counter(client, "fraud_ood_warnings_total") - before["ood"] == 2 * ood
    assert counter(client, "fraud_batch_transactions_sum") - before["batch"] == 2 * len(rows)
    assert counter(client, "fraud_http_requests_total", status="200", **route) - before["ok"] == 1
    assert counter(client, "fraud_http_requests_total", status="400", **route) - before["bad"] == 1


def test_the_log_line_carries_no_values(
    client: TestClient,
    rows: np.ndarray,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Reach caplog's root handler even if the service's logging config stopped propagation.
    monkeypatch.setattr(logging.getLogger("app"), "propagate", True)
    caplog.set_level(logging.INFO, logger="app.request")
    values = rows[:3].copy()
    values[:, 5] = MARK
    infer(client, {"inputs": [tensor(values)]})
    infer(client, request_with(data=[*ROW[:29], "x"]))

    lines = [record for record in caplog.records if record.name == "app.request"]
    assert [line.status for line in lines] == [200, 400]  # type: ignore[attr-defined]
    assert lines[0].route == "/v2/models/{model_name}/infer"  # type: ignore[attr-defined]
    assert lines[0].transactions == 3  # type: ignore[attr-defined]
    assert lines[0].model_version == "1.0.0"  # type: ignore[attr-defined]
    assert "987.65" not in caplog.text
    assert all("987.65" not in str(vars(record)) for record in caplog.records)


def test_openapi_documents_every_oip_route(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    assert {path for path in paths if path.startswith("/v2")} == {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}",
        "/v2/models/{model_name}/versions/{model_version}/ready",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    }
    operation = paths["/v2/models/{model_name}/infer"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/InferRequest"}
    schemas = document["components"]["schemas"]
    tensor_schema = schemas["InferInputTensor"]
    assert tensor_schema["properties"]["shape"]["prefixItems"][0]["maximum"] == 1000
    assert set(operation["responses"]) == {"200", "400", "403", "404", "413", "429", "503", "4XX"}
    assert set(operation["responses"]["200"]["content"]) == {
        "application/json",
        "application/octet-stream",
    }
    assert operation["security"] == [{"APIKeyHeader": []}]
    assert "security" not in paths["/v2/health/ready"]["get"]


REPEATED_NAME = (
    "a name is given twice in one JSON object of the request (parsers differ on which value counts)"
)


def twice(text: str, name: str, first: str) -> str:
    """`text` with `"name": first` added before the first `"name":` it has."""
    return text.replace(f'"{name}": ', f'"{name}": {first}, "{name}": ', 1)


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("data", '["x"]'),  # what would be scored is the last, and only it was checked
        ("data", json.dumps(ROW)),
        ("inputs", "[]"),
        ("id", '"a:b"'),
        ("datatype", '"BYTES"'),
        ("parameters", '{"binary_data_output": "yes"}'),
    ],
)
def test_a_name_given_twice_is_400(client: TestClient, name: str, first: str) -> None:
    document = {**request_with(), "id": "c:d", "parameters": {"binary_data_output": False}}
    response = infer(client, twice(json.dumps(document), name, first).encode())
    assert (response.status_code, response.json()) == (400, {"error": REPEATED_NAME})


def test_a_name_given_twice_in_a_binary_header_is_400(client: TestClient, rows: np.ndarray) -> None:
    body, headers = binary_request(rows[:1])
    header = body[: int(headers[LENGTH])].decode()
    repeated = twice(header, "binary_data_size", "0").encode()
    response = infer(client, repeated + body[len(header) :], **{LENGTH: str(len(repeated))})
    assert (response.status_code, response.json()) == (400, {"error": REPEATED_NAME})


@pytest.mark.parametrize(
    "request_id",
    ["a:b::c", "ends:", '"quoted": 1, "x": 2', "\\u003a escaped", "é:ü"],
)
def test_colons_inside_strings_are_not_taken_for_a_repeated_name(
    client: TestClient, rows: np.ndarray, request_id: str
) -> None:
    # The colons are counted to find a repeated name: those inside strings must not count.
    document = {
        "id": request_id,
        "inputs": [tensor(rows[:2], parameters={"a:b": "c:d"})],
        "outputs": [{"name": "fraud_score", "parameters": {"binary_data": False}}],
        "parameters": {"note:x": "y:z:"},
    }
    response = infer(client, document)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == request_id
    escaped = json.dumps(document).replace('"a:b"', '"a\\u003ab"').replace('"c:d"', '"c\\u003Ad"')
    assert infer(client, escaped.encode()).status_code == 200
    escaped_twice = twice(escaped, "inputs", "[]")
    response = infer(client, escaped_twice.encode())
    assert (response.status_code, response.json()) == (400, {"error": REPEATED_NAME})
