"""By-id scoring on the real service (2 workers) while its Redis stops, freezes and comes back."""

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from app.features import record_fields, row_to_dict, transaction_key
from app.synthetic import generate
from tests.conftest import HEADERS
from tests.redis_server import RedisServer, requires_redis, start_redis
from tests.server import Server, log_records, scrape, start_server, total, wait_for, worker_pids

pytestmark = [pytest.mark.process, requires_redis]

PREFIX = "proc:v1"
BUDGET_MS = 50  # the contract's default FEATURE_STORE_TIMEOUT_MS
# An outage must be answered at about the budget, never after redis-py's own multi-second
# timeouts: a bound far above the budget and far below those, for a loaded test machine.
HANG_BOUND_S = 1.0
ROWS, _ = generate(rows=20, seed=31)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("byid-process")


def fill(redis_server: RedisServer) -> None:
    client = redis_server.client()
    for index, row in enumerate(ROWS.tolist()):
        client.hset(transaction_key(PREFIX, f"t{index}"), mapping=record_fields(row, time.time()))
    client.close()


@pytest.fixture(scope="module")
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    running = start_redis(workdir)
    fill(running)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            os.kill(running.process.pid, signal.SIGCONT)
        running.stop()


@pytest.fixture(scope="module")
def server(workdir: Path, onnx_model_path: Path, redis_server: RedisServer) -> Iterator[Server]:
    running = start_server(
        workdir,
        MODEL_PATH=onnx_model_path,
        FEATURE_STORE_URI=redis_server.uri,
        FEATURE_STORE_PREFIX=PREFIX,
        FEATURE_STORE_TIMEOUT_MS=BUDGET_MS,
    )
    try:
        yield running
    finally:
        running.stop()


# One client (building one costs ~100 ms: its TLS context), a new connection per request, so
# that the kernel spreads the requests over both workers.
CLIENT = httpx.Client(headers=HEADERS, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


def by_id(server: Server, transaction_id: str = "t3") -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = CLIENT.post(
        f"{server.url}/v1/fraud-score/by-id", json={"transaction_id": transaction_id}
    )
    return response, time.perf_counter() - started


def raw_and_health_answer(server: Server) -> None:
    body = row_to_dict(ROWS[3].tolist())
    raw = httpx.post(f"{server.url}/v1/fraud-score", json=body, headers=HEADERS, timeout=10)
    assert raw.status_code == 200
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_outage_is_503_fast_and_recovers_without_a_restart(
    server: Server, redis_server: RedisServer, workdir: Path
) -> None:
    expected = by_id(server)[0].json()
    assert expected["transaction-id"] == "t3"
    workers = worker_pids(server)

    # Frozen (SIGSTOP): connections stay open but nothing answers — the budget must cut it.
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        for _ in range(6):  # fresh connections: both workers meet the frozen store
            response, seconds = by_id(server)
            print(f"frozen store: {response.status_code} in {seconds * 1000:.1f} ms")
            assert response.status_code == 503
            assert response.json()["error"] == "feature_store_unavailable"
            assert response.headers["Retry-After"] == "1"
            assert seconds < HANG_BOUND_S
        raw_and_health_answer(server)
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    wait_for(lambda: by_id(server)[0].status_code == 200, "by-id to answer after SIGCONT")

    # Stopped: connections refused.
    port = redis_server.port
    redis_server.stop()
    for _ in range(6):
        response, seconds = by_id(server)
        print(f"stopped store: {response.status_code} in {seconds * 1000:.1f} ms")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert seconds < HANG_BOUND_S
    raw_and_health_answer(server)

    # Restarted on the same port (empty: persistence is off), refilled: by-id is back.
    restarted = start_redis(workdir, port=port)
    redis_server.process = restarted.process
    fill(restarted)
    wait_for(lambda: all(by_id(server)[0].status_code == 200 for _ in range(4)), "recovery")
    assert by_id(server)[0].json() == expected
    assert worker_pids(server) == workers  # the same processes: nothing was restarted

    samples = scrape(server)
    assert total(samples, "fraud_feature_store_lookups_total", outcome="error") >= 12
    assert total(samples, "fraud_feature_store_lookups_total", outcome="found") >= 2
    messages = [record["message"] for record in log_records(server)]
    assert any("feature store" in message and "503" in message for message in messages)
    assert any(message == "feature store reachable again" for message in messages)
