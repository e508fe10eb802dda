"""tritonclient[http] against the real service (2 workers): its calls work and equal /v1's."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from app.features import FEATURE_NAMES
from app.synthetic import generate
from tests.conftest import HEADERS
from tests.server import Server, start_server

pytestmark = pytest.mark.process

NUMPY = {"FP32": np.float32, "FP64": np.float64}


def key() -> dict[str, str]:
    """The key header, fresh per call: tritonclient adds its own headers to the dict it is given."""
    return dict(HEADERS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, onnx_model_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("triton"), MODEL_PATH=onnx_model_path)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(
        url=server.url.removeprefix("http://"), connection_timeout=10, network_timeout=60
    )
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    features, _ = generate(rows=1000, seed=5, fraud_rate=0.05)
    features[3, 4] = 500.0  # one row far outside training: ood-warning
    return features


def v1_results(server: Server, rows: np.ndarray, query: str = "") -> list[dict[str, Any]]:
    transactions = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in rows.tolist()]
    response = httpx.post(
        f"{server.url}/v1/fraud-score/batch{query}",
        json={"transactions": transactions},
        headers=HEADERS,
        timeout=30,
    )
    assert response.status_code == 200
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def features_input(rows: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("features", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows.astype(NUMPY[datatype]), binary_data=binary)
    return tensor


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live(headers=key())
    assert client.is_server_ready(headers=key())
    assert client.is_model_ready("fraud", headers=key())
    assert client.is_model_ready("fraud", "1.0.0", headers=key())
    assert not client.is_model_ready("fraud", "0.9.0", headers=key())
    assert not client.is_model_ready("other", headers=key())
    assert client.get_server_metadata(headers=key()) == {
        "name": "fraud-scoring-service",
        "version": "1.0.0",
        "extensions": ["binary_tensor_data"],
    }
    metadata = client.get_model_metadata("fraud", headers=key())
    assert metadata["name"] == "fraud"
    assert metadata["versions"] == ["1.0.0"]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 30]}]
    assert [output["name"] for output in metadata["outputs"]][:4] == [
        "fraud_probability",
        "fraud_score",
        "is_fraud",
        "ood_warning",
    ]
    assert metadata["parameters"]["features"].split(",") == list(FEATURE_NAMES)
    assert client.get_model_metadata("fraud", "1.0.0", headers=key()) == metadata


def test_metadata_without_the_key_raises_the_servers_message(
    client: triton.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("fraud")
    assert raised.value.status() == "403"
    assert raised.value.message() == "Missing or invalid API key: send it in the X-API-Key header"


@pytest.mark.parametrize("count", [1, 100, 1000])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_equals_the_v1_batch(
    client: triton.InferenceServerClient,
    server: Server,
    rows: np.ndarray,
    count: int,
    datatype: str,
    binary: bool,
) -> None:
    batch = rows[:count]
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("fraud_probability", "fraud_score", "is_fraud", "ood_warning")
    ]

    result = client.infer(
        "fraud",
        [features_input(batch, datatype, binary)],
        outputs=outputs,
        request_id=f"{datatype}-{count}",
        headers=key(),
    )

    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == ("fraud", "1.0.0")
    assert response["id"] == f"{datatype}-{count}"
    sent = batch.astype(NUMPY[datatype]).astype(np.float64)  # the values the tensor carried
    expected = v1_results(server, sent)
    scores = result.as_numpy("fraud_score")
    assert scores.dtype == np.int32
    assert scores.tolist() == [item["fraud-score"] for item in expected]
    assert result.as_numpy("is_fraud").tolist() == [item["is-fraud"] for item in expected]
    assert result.as_numpy("ood_warning").tolist() == [item["ood-warning"] for item in expected]
    probability = result.as_numpy("fraud_probability")
    assert probability.dtype == np.float32
    assert np.rint(100 * probability.astype(np.float64)).astype(int).tolist() == scores.tolist()
    if count == 1000:
        assert {item["ood-warning"] for item in expected} == {True, False}
        assert {item["is-fraud"] for item in expected} == {True, False}


def test_default_outputs_are_binary_and_exclude_contributions(
    client: triton.InferenceServerClient, server: Server, rows: np.ndarray
) -> None:
    result = client.infer("fraud", [features_input(rows[:10], "FP32", True)], headers=key())
    outputs = result.get_response()["outputs"]
    assert [output["name"] for output in outputs] == [
        "fraud_probability",
        "fraud_score",
        "is_fraud",
        "ood_warning",
    ]
    assert all("binary_data_size" in output["parameters"] for output in outputs)
    assert result.as_numpy("contributions") is None
    expected = v1_results(server, rows[:10].astype(np.float32).astype(np.float64))
    assert result.as_numpy("fraud_score").tolist() == [item["fraud-score"] for item in expected]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False])
def test_a_compressed_request_is_answered_as_the_uncompressed_one(
    client: triton.InferenceServerClient, rows: np.ndarray, algorithm: str, binary: bool
) -> None:
    """request_compression_algorithm compresses the whole body; the answer (which the service
    does not compress: Accept-Encoding is a preference) is what the same request gets without."""
    batch = [features_input(rows, "FP32", binary)]
    plain = client.infer("fraud", batch, headers=key())
    compressed = client.infer(
        "fraud",
        batch,
        headers=key(),
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    for name in ("fraud_probability", "fraud_score", "is_fraud", "ood_warning"):
        assert np.array_equal(compressed.as_numpy(name), plain.as_numpy(name)), name


def test_output_selection(client: triton.InferenceServerClient, rows: np.ndarray) -> None:
    outputs = [
        triton.InferRequestedOutput("ood_warning", binary_data=True),
        triton.InferRequestedOutput("fraud_score", binary_data=False),
    ]
    result = client.infer(
        "fraud",
        [features_input(rows[:5], "FP64", False)],
        outputs=outputs,
        model_version="1.0.0",
        headers=key(),
    )
    described = result.get_response()["outputs"]
    assert [output["name"] for output in described] == ["ood_warning", "fraud_score"]
    assert described[0]["parameters"] == {"binary_data_size": 5}
    assert "data" in described[1]
    assert result.as_numpy("is_fraud") is None
    assert result.as_numpy("ood_warning").shape == (5,)


def test_contributions(
    client: triton.InferenceServerClient, server: Server, rows: np.ndarray
) -> None:
    """The /v1 reasons' contributions when the model has them; the server's 400 when not."""
    batch = rows[:20]
    metadata = client.get_model_metadata("fraud", headers=key())
    outputs = [triton.InferRequestedOutput("contributions")]
    request = [features_input(batch, "FP64", True)]
    if "contributions" not in [output["name"] for output in metadata["outputs"]]:
        with pytest.raises(InferenceServerException) as raised:
            client.infer("fraud", request, outputs=outputs, headers=key())
        assert raised.value.status() == "400"
        assert raised.value.message() == (
            "output 'contributions' is not available: the served model carries no reason codes"
        )
        return
    result = client.infer("fraud", request, outputs=outputs, headers=key())
    contributions = result.as_numpy("contributions")
    assert contributions.shape == (20, 30)
    expected = v1_results(server, batch, "?explain=true&max_reasons=30")
    for row, item in zip(contributions.tolist(), expected, strict=True):
        by_feature = {reason["feature"]: reason["contribution"] for reason in item["reasons"]}
        assert row == pytest.approx([by_feature[name] for name in FEATURE_NAMES], abs=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_wrong_shape_raises_the_servers_message(
    client: triton.InferenceServerClient, rows: np.ndarray, binary: bool
) -> None:
    tensor = triton.InferInput("features", [1, 29], "FP32")
    tensor.set_data_from_numpy(rows[:1, :29].astype(np.float32), binary_data=binary)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("fraud", [tensor], headers=key())
    assert raised.value.status() == "400"
    assert raised.value.message() == "input 'features' must have shape [N, 30]"


def test_an_unknown_model_raises_404(
    client: triton.InferenceServerClient, rows: np.ndarray
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer("other", [features_input(rows[:1], "FP32", True)], headers=key())
    assert raised.value.status() == "404"
    assert raised.value.message() == "unknown model: this server serves 'fraud'"
