"""RATE_LIMIT over a real 2-worker server: shared through a real Redis, per worker in memory."""

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import API_KEY, ROTATION_KEY
from tests.redis_server import RedisServer, requires_redis, start_redis
from tests.server import (
    Server,
    free_port,
    log_records,
    scrape,
    send_on_own_connections,
    start_server,
    total,
    wait_for,
    worker_pids,
)

pytestmark = [pytest.mark.process, requires_redis]

LIMIT = 40  # per minute and API key; a test's requests take seconds, well inside one window
SCORE = "/v1/fraud-score"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ratelimit")


@pytest.fixture
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    running = start_redis(workdir)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def limited_server(
    workdir: Path, onnx_model_path: Path, redis_server: RedisServer
) -> Iterator[Server]:
    running = start_server(
        workdir,
        MODEL_PATH=onnx_model_path,
        API_KEYS=ROTATION_KEY,
        RATE_LIMIT=f"{LIMIT}/minute",
        RATE_LIMIT_STORAGE_URI=redis_server.uri,
    )
    try:
        yield running
    finally:
        running.stop()


def score_on_own_connections(
    server: Server, count: int, key: str, body: dict[str, float]
) -> list[tuple[httpx.Response, int]]:
    return send_on_own_connections(server, count, json=body, headers={"X-API-Key": key})


def assert_rate_limit_headers(response: httpx.Response) -> None:
    assert response.headers["X-RateLimit-Limit"] == str(LIMIT)
    assert int(response.headers["X-RateLimit-Remaining"]) >= 0
    assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())


def test_redis_shares_one_budget_across_workers(
    limited_server: Server, mock_body: dict[str, float]
) -> None:
    for key in (API_KEY, ROTATION_KEY):  # the rotation key has a budget of its own
        answered = score_on_own_connections(limited_server, 2 * LIMIT, key, mock_body)
        statuses = [response.status_code for response, _ in answered]
        assert statuses == [200] * LIMIT + [429] * LIMIT
        # Both workers spent from the budget: counted per worker, up to 2N would have passed.
        allowed_by = Counter(pid for response, pid in answered if response.status_code == 200)
        assert set(allowed_by) == worker_pids(limited_server), dict(allowed_by)
        remaining = [int(r.headers["X-RateLimit-Remaining"]) for r, _ in answered[:LIMIT]]
        assert remaining == list(range(LIMIT - 1, -1, -1))
        for response, _ in answered:
            assert_rate_limit_headers(response)
        for response, _ in answered[LIMIT:]:
            assert response.json()["error"] == "rate_limited"
            assert response.headers["X-RateLimit-Remaining"] == "0"
            retry_after = response.headers["Retry-After"]
            assert retry_after.isdigit()
            assert 1 <= int(retry_after) <= 60
    samples = scrape(limited_server)
    assert total(samples, "fraud_rate_limit_rejections_total") == 2 * LIMIT
    assert total(samples, "fraud_rate_limit_storage_errors_total") == 0


def outage_lines(server: Server) -> list[dict[str, Any]]:
    return [
        record
        for record in log_records(server)
        if record["message"].startswith("rate-limit storage unreachable")
    ]


def assert_fails_open(server: Server, answered: list[tuple[httpx.Response, int]]) -> None:
    """Over budget but without storage: every request scored (no 429, never a 500), the outage
    counted, and logged once per worker that met it, not once per request."""
    assert [response.status_code for response, _ in answered] == [200] * len(answered)
    assert all(0 <= response.json()["fraud-score"] <= 100 for response, _ in answered)
    # Every check skipped is counted, the ones inside the 5 s before Redis is tried again too.
    assert total(scrape(server), "fraud_rate_limit_storage_errors_total") == len(answered)
    workers = {pid for _, pid in answered}
    assert len(workers) == 2
    wait_for(lambda: len(outage_lines(server)) >= 2, "the storage outage to be logged")
    assert len(outage_lines(server)) == len(workers)
    assert all(record["level"] == "error" for record in outage_lines(server))
    assert server.process.poll() is None


def test_redis_down_fails_open_says_so_once_and_recovers(
    workdir: Path, limited_server: Server, redis_server: RedisServer, mock_body: dict[str, float]
) -> None:
    answered = score_on_own_connections(limited_server, LIMIT + 5, API_KEY, mock_body)
    assert [r.status_code for r, _ in answered][-5:] == [429] * 5  # enforced while Redis is up
    assert not outage_lines(limited_server)

    redis_server.stop()
    assert_fails_open(
        limited_server, score_on_own_connections(limited_server, 30, API_KEY, mock_body)
    )

    # Redis is back (empty): each worker retries within 5 s and enforces limits again.
    restarted = start_redis(workdir, redis_server.port)
    try:

        def both_workers_recovered() -> bool:
            ((response, _),) = score_on_own_connections(limited_server, 1, API_KEY, mock_body)
            assert response.status_code in (200, 429)  # never a 500 while it reconnects
            recovered = [
                record
                for record in log_records(limited_server)
                if record["message"].startswith("rate-limit storage reachable again")
            ]
            return len(recovered) == 2

        wait_for(both_workers_recovered, "both workers to use Redis again", timeout=30)
        answered = score_on_own_connections(limited_server, 10, API_KEY, mock_body)
        assert all("X-RateLimit-Remaining" in response.headers for response, _ in answered)
        assert len(outage_lines(limited_server)) == 2  # still one per worker
    finally:
        restarted.stop()


def test_redis_unreachable_from_the_start_fails_open(
    workdir: Path, onnx_model_path: Path, mock_body: dict[str, float]
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    running = start_server(
        workdir, MODEL_PATH=onnx_model_path, RATE_LIMIT="5/minute", RATE_LIMIT_STORAGE_URI=closed
    )
    try:
        assert_fails_open(running, score_on_own_connections(running, 30, API_KEY, mock_body))
    finally:
        running.stop()


def test_memory_storage_counts_per_worker(
    workdir: Path, onnx_model_path: Path, mock_body: dict[str, float]
) -> None:
    """memory:// (the default) counts in each worker: with 2 workers, up to 2N pass (README)."""
    running = start_server(
        workdir,
        MODEL_PATH=onnx_model_path,
        RATE_LIMIT=f"{LIMIT}/minute",
        RATE_LIMIT_STORAGE_URI="memory://",
    )
    try:
        answered = score_on_own_connections(running, 2 * LIMIT, API_KEY, mock_body)
    finally:
        running.stop()
    served = Counter(pid for _, pid in answered)
    allowed = Counter(pid for response, pid in answered if response.status_code == 200)
    assert {response.status_code for response, _ in answered} <= {200, 429}
    assert len(served) == 2
    for pid, count in served.items():
        assert allowed[pid] == min(count, LIMIT)  # each worker has its own N
    assert LIMIT < sum(allowed.values()) <= 2 * LIMIT  # more than one shared budget would allow
