"""The last-resort 500: a generic body with the request id, in each protocol's shape, no leak."""

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.features import FEATURE_NAMES
from app.logs import JsonFormatter
from app.middleware import RequestContextMiddleware
from app.security import KeyRing
from tests.conftest import HEADERS

SECRET = "V14=-6.00284633256728 key=test-key-4f1c2a9e7b3d5f60"


class BrokenEngine:
    """An engine with a bug whose message quotes what it should not."""

    name = "onnx"
    explanation = None
    baseline = None

    def fraud_probability(self, matrix: np.ndarray) -> np.ndarray:
        raise RuntimeError(SECRET)

    def explain(self, matrix: np.ndarray) -> Any:
        raise RuntimeError(SECRET)


@pytest.fixture
def broken(client: TestClient) -> TestClient:
    client.app.state.scorer.engine = BrokenEngine()  # type: ignore[attr-defined]
    return client


def test_a_bug_is_a_generic_500_with_the_request_id(
    broken: TestClient, mock_body: dict[str, float], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = broken.post(
            "/v1/fraud-score", json=mock_body, headers={**HEADERS, "X-Request-ID": "req-1"}
        )
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error", "request_id": "req-1"}
    assert response.headers["X-Request-ID"] == "req-1"
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert any('"unhandled error"' in line and '"req-1"' in line for line in lines)
    assert any('"status":500' in line for line in lines)  # the request's own log line
    assert not any("6.0028" in line or "test-key" in line for line in lines)
    assert SECRET not in response.text


def test_a_bug_under_v2_has_oips_error_shape(
    broken: TestClient, mock_body: dict[str, float]
) -> None:
    body = {
        "inputs": [
            {
                "name": "features",
                "shape": [1, 30],
                "datatype": "FP64",
                "data": [mock_body[name] for name in FEATURE_NAMES],
            }
        ]
    }
    response = broken.post("/v2/models/fraud/infer", json=body, headers=HEADERS)
    assert response.status_code == 500
    assert response.json()["error"] == "Internal server error"
    assert "detail" not in response.json()
    assert SECRET not in response.text


def test_an_answer_cancelled_while_sending_is_logged_as_cut_short(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What uvicorn cancels at the shutdown bound after the headers went out: the log line keeps
    the status it began with and says the answer was cut short."""

    async def stalls_mid_answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(3600)

    async def run() -> None:
        app = SimpleNamespace(state=SimpleNamespace(key_ring=KeyRing((b"k" * 32,))))
        scope = {"type": "http", "method": "GET", "path": "/slow", "headers": [], "app": app}
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        task = asyncio.create_task(RequestContextMiddleware(stalls_mid_answer)(scope, None, send))
        while not sent:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.INFO, logger="app.request"):
        asyncio.run(run())
    [line] = [record for record in caplog.records if record.getMessage() == "request"]
    assert (line.status, line.cut_short) == (200, True)  # type: ignore[attr-defined]
