"""/metrics summed over the workers however they were started, and never over an earlier run's."""

from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import HEADERS
from tests.server import (
    Samples,
    Server,
    samples_of,
    scrape,
    send_on_own_connections,
    start_server,
    start_uvicorn,
    total,
    wait_for,
    worker_pids,
)

pytestmark = pytest.mark.process

SCORED = {"route": "/v1/fraud-score", "method": "POST", "status": "200"}


@pytest.fixture
def tmpdir_of_runs(tmp_path: Path) -> Path:
    """The TMPDIR the servers see, so that their metrics directories can be inspected."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    return directory


def metrics_dirs(tmpdir: Path) -> list[Path]:
    return sorted(tmpdir.glob("fraud-metrics-*"))


def post(server: Server, body: dict[str, float], count: int) -> None:
    """`count` scoring requests, each on a new connection (so whichever worker accepts it)."""
    for _ in range(count):
        response = httpx.post(f"{server.url}/v1/fraud-score", json=body, headers=HEADERS)
        assert response.status_code == 200
    # Counted once each response has gone: wait for the last increments to land.
    wait_for(lambda: scored(scrape(server)) >= count, f"{count} requests to be counted")


def scored(samples: Samples) -> float:
    return total(samples, "fraud_http_requests_total", **SCORED)


def scrapes_by_worker(server: Server) -> dict[int, list[float]]:
    """Scrapes on fresh connections until each worker has answered some: pid → what each said."""
    pids = worker_pids(server)
    seen: dict[int, list[float]] = {}

    def every_worker_answered() -> bool:
        for response, pid in send_on_own_connections(server, 8, "/metrics", method="GET"):
            seen.setdefault(pid, []).append(scored(samples_of(response)))
        return set(seen) == pids

    wait_for(every_worker_answered, "scrapes answered by every worker", timeout=60)
    return seen


def test_plain_uvicorn_workers_count_into_every_scrape(
    tmp_path: Path, tmpdir_of_runs: Path, onnx_model_path: Path, mock_body: dict[str, float]
) -> None:
    server = start_uvicorn(tmp_path, workers=2, MODEL_PATH=onnx_model_path, TMPDIR=tmpdir_of_runs)
    try:
        assert len(worker_pids(server)) == 2
        post(server, mock_body, 40)
        by_worker = scrapes_by_worker(server)
        [directory] = metrics_dirs(tmpdir_of_runs)
    finally:
        server.stop()
    assert {pid: set(values) for pid, values in by_worker.items()} == {
        pid: {40} for pid in by_worker
    }
    assert directory.name.startswith(f"fraud-metrics-{server.process.pid}-")


def test_a_second_run_does_not_count_the_first_runs_files(
    tmp_path: Path, tmpdir_of_runs: Path, onnx_model_path: Path, mock_body: dict[str, float]
) -> None:
    def run(requests: int, check: Callable[[], None] = lambda: None) -> Path:
        server = start_uvicorn(
            tmp_path, workers=2, MODEL_PATH=onnx_model_path, TMPDIR=tmpdir_of_runs
        )
        try:
            check()
            post(server, mock_body, requests)
            assert set().union(*scrapes_by_worker(server).values()) == {requests}
            [directory] = metrics_dirs(tmpdir_of_runs)
            assert list(directory.glob("counter_*.db"))
            return directory
        finally:
            server.stop()

    first = run(5)
    assert first.exists()  # plain uvicorn's supervisor leaves it behind when it exits
    second = run(40, check=lambda: assert_gone(first))
    assert second != first


def assert_gone(directory: Path) -> None:
    assert not directory.exists(), "a dead supervisor's directory is removed by the next run"


def test_single_process_uvicorn_needs_no_directory(
    tmp_path: Path, tmpdir_of_runs: Path, onnx_model_path: Path, mock_body: dict[str, float]
) -> None:
    server = start_uvicorn(tmp_path, MODEL_PATH=onnx_model_path, TMPDIR=tmpdir_of_runs)
    try:
        post(server, mock_body, 3)
        assert scored(scrape(server)) == 3
    finally:
        server.stop()
    assert metrics_dirs(tmpdir_of_runs) == []


def test_start_command_uses_its_own_directory_and_removes_it(
    tmp_path: Path, tmpdir_of_runs: Path, onnx_model_path: Path, mock_body: dict[str, float]
) -> None:
    server = start_server(tmp_path, MODEL_PATH=onnx_model_path, TMPDIR=tmpdir_of_runs)
    try:
        post(server, mock_body, 40)
        assert set().union(*scrapes_by_worker(server).values()) == {40}
        [directory] = metrics_dirs(tmpdir_of_runs)
        assert directory.name.startswith(f"fraud-metrics-{server.process.pid}-")
    finally:
        assert server.stop() == 0
    assert metrics_dirs(tmpdir_of_runs) == []


def test_start_command_empties_an_operators_directory_of_an_earlier_run(
    tmp_path: Path, onnx_model_path: Path, mock_body: dict[str, float]
) -> None:
    operators = tmp_path / "operator-metrics"
    for requests in (5, 40):
        server = start_server(
            tmp_path, MODEL_PATH=onnx_model_path, PROMETHEUS_MULTIPROC_DIR=operators
        )
        try:
            post(server, mock_body, requests)
            assert set().union(*scrapes_by_worker(server).values()) == {requests}
        finally:
            server.stop()
        assert list(operators.glob("counter_*.db"))  # kept: the directory is the operator's
