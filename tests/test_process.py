"""The real service (`python -m app`, 2 workers) on 127.0.0.1: start-up, SLO, logs, metrics."""

import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from app.features import FEATURE_NAMES
from app.synthetic import generate
from tests.conftest import API_KEY, HEADERS, ROOT
from tests.server import (
    Server,
    free_port,
    is_running,
    log_records,
    scrape,
    send_on_own_connections,
    service_env,
    start_server,
    start_uvicorn,
    total,
    wait_for,
    worker_pids,
)

pytestmark = pytest.mark.process

SLO_SECONDS = 0.2  # the service's p99 objective; never tighter
SCORE_KEYS = {"fraud-score", "is-fraud", "model-version", "ood-warning"}
UNHEALTHY = {"status": "unhealthy", "model_loaded": False}
SCORE = "/v1/fraud-score"


# --- helpers -------------------------------------------------------------------------------------


def p99(samples: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(samples)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


def assert_score_body(body: dict[str, Any]) -> None:
    assert set(body) == SCORE_KEYS
    assert type(body["fraud-score"]) is int
    assert 0 <= body["fraud-score"] <= 100
    assert type(body["is-fraud"]) is bool
    assert body["is-fraud"] is (body["fraud-score"] >= 50)
    assert type(body["ood-warning"]) is bool
    assert isinstance(body["model-version"], str)


def fresh_post(server: Server, body: Any, **kwargs: Any) -> httpx.Response:
    """One request on a new connection (the kernel picks the worker for each connection)."""
    headers = kwargs.pop("headers", HEADERS)
    return httpx.post(f"{server.url}{SCORE}", json=body, headers=headers, timeout=10, **kwargs)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("process")


@pytest.fixture(scope="module")
def model_digest(model_path: Path) -> str:
    return hashlib.sha256(model_path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def server(workdir: Path, model_path: Path, model_digest: str) -> Iterator[Server]:
    """The shared server: the session model, pinned by its (matching) digest."""
    running = start_server(workdir, MODEL_PATH=model_path, MODEL_SHA256=model_digest)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def body(mock_body: dict[str, float]) -> dict[str, float]:
    return mock_body


# --- (1) start-up refusal ------------------------------------------------------------------------


def placeholder_key() -> str:
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("API_KEY="):
            return line.removeprefix("API_KEY=").strip()
    raise AssertionError(".env.example has no API_KEY line")


START_COMMAND = ("-m", "app", "--host", "127.0.0.1")


def exit_of_start_command(
    workdir: Path, unset: tuple[str, ...], command: tuple[str, ...] = START_COMMAND, **env: Any
) -> Any:
    """The start command (or `command`) run to its exit, in the clean test environment less the
    `unset` variables."""
    environment = {k: v for k, v in service_env(**env).items() if k not in unset}
    return subprocess.run(
        [sys.executable, *command, "--port", str(free_port())],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


PLACEHOLDER = placeholder_key()
UNSET = None  # the variable is absent from the environment


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        pytest.param("API_KEY", UNSET, None, id="api-key-missing"),
        pytest.param("API_KEY", "", None, id="api-key-empty"),
        pytest.param("API_KEY", "   ", None, id="api-key-blank"),
        pytest.param("API_KEY", "short-k3y-9x", "short-k3y-9x", id="api-key-short"),
        pytest.param("API_KEY", PLACEHOLDER, PLACEHOLDER, id="api-key-placeholder"),
        pytest.param("API_KEYS", f"{'r' * 24},tiny-r0t8", "tiny-r0t8", id="api-keys-short"),
        pytest.param("FRAUD_THRESHOLD", "150", None, id="threshold-150"),
        pytest.param("FRAUD_THRESHOLD", "abc", None, id="threshold-abc"),
        pytest.param("FRAUD_THRESHOLD", "nan", None, id="threshold-nan"),
    ],
)
def test_bad_configuration_refuses_to_start(
    workdir: Path, variable: str, value: str | None, secret: str | None
) -> None:
    # With 2 workers, a check inside the workers would loop; the timeout catches that.
    if value is UNSET:
        result = exit_of_start_command(workdir, unset=(variable,))
    else:
        result = exit_of_start_command(workdir, unset=(), **{variable: value})
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert result.returncode != 0
    assert len(lines) == 1, output
    assert re.search(rf"\b{variable}\b", lines[0]), lines[0]
    assert "Traceback" not in output
    assert "Started server process" not in output
    if secret:
        assert secret not in output


NOT_UTF8 = b"API_KEY=a-perfectly-good-key-123456\nAPP_VERSION=caf\xe9\n"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(START_COMMAND, id="start-command"),
        pytest.param(("-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"), id="plain-uvicorn"),
    ],
)
def test_a_dotenv_that_is_not_utf8_refuses_to_start_naming_the_file(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    (tmp_path / ".env").write_bytes(NOT_UTF8)
    result = exit_of_start_command(tmp_path, unset=("API_KEY",), command=command)
    assert result.returncode == 3
    assert result.stdout + result.stderr == (
        f"configuration error: cannot read .env: not UTF-8 text (at byte {NOT_UTF8.index(0xE9)})\n"
    )


# --- (2) a running server: the curl flow, the SLO, both workers -----------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_flow(server: Server) -> None:
    result = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{server.url}{SCORE}",
         "-H", "Content-Type: application/json", "-H", f"X-API-Key: {API_KEY}",
         "--data", f"@{ROOT / 'model' / 'mock-request-body.json'}",
         "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text, status = result.stdout.rsplit("\n", 1)
    assert status == "200"
    assert_score_body(json.loads(text))


@pytest.mark.exclusive
def test_sequential_p99_within_slo(server: Server, body: dict[str, float]) -> None:
    payload = json.dumps(body).encode()
    headers = {**HEADERS, "Content-Type": "application/json"}
    latencies = []
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        for _ in range(5):  # warm-up: connection, first requests through each code path
            assert client.post(SCORE, content=payload).status_code == 200
        for _ in range(100):
            started = time.perf_counter()
            response = client.post(SCORE, content=payload)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
    print(f"sequential p99 over 100 requests: {p99(latencies) * 1000:.1f} ms")  # shown by -rP
    assert p99(latencies) < SLO_SECONDS, f"sequential p99 {p99(latencies) * 1000:.1f} ms"


@pytest.mark.exclusive
def test_concurrent_p99_within_slo(server: Server, body: dict[str, float]) -> None:
    threads, per_thread = 20, 25
    payload = json.dumps(body).encode()
    headers = {**HEADERS, "Content-Type": "application/json"}
    start_together = threading.Barrier(threads, timeout=60)

    def run() -> list[tuple[int, float]]:
        results = []
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
            assert client.post(SCORE, content=payload).status_code == 200  # keep-alive warm-up
            start_together.wait()
            for _ in range(per_thread):
                started = time.perf_counter()
                status = client.post(SCORE, content=payload).status_code
                results.append((status, time.perf_counter() - started))
        return results

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(run) for _ in range(threads)]
        results = [item for future in futures for item in future.result()]
    assert len(results) == threads * per_thread
    assert {status for status, _ in results} == {200}
    latencies = [seconds for _, seconds in results]
    print(f"concurrent p99 over {len(latencies)} requests: {p99(latencies) * 1000:.1f} ms")
    assert p99(latencies) < SLO_SECONDS, f"concurrent p99 {p99(latencies) * 1000:.1f} ms"


def test_both_workers_serve_requests(server: Server, body: dict[str, float]) -> None:
    """20 requests on 20 connections: the sockets that carried them belong to both worker pids.

    All 20 on one worker would have probability 2 × 2^-20 with the kernel's hashing.
    """
    pids = worker_pids(server)
    assert len(pids) == 2
    answered = send_on_own_connections(server, 20, json=body, headers=HEADERS)
    assert [response.status_code for response, _ in answered] == [200] * 20
    served = Counter(pid for _, pid in answered)
    assert set(served) == pids, f"requests per worker pid: {dict(served)}"
    assert total(scrape(server), "fraud_worker_starts_total") == 2


# --- (3) and (4) no model: missing, corrupt, digest mismatch -------------------------------------


def bad_artifact(workdir: Path, model_path: Path, kind: str) -> Path:
    path = workdir / kind / "fraud-model.joblib"
    path.parent.mkdir(exist_ok=True)
    if kind == "garbage":
        path.write_bytes(b"\x80\x05not a pickle\x00" * 64 + bytes(range(256)))
    elif kind == "truncated":
        artifact = model_path.read_bytes()
        path.write_bytes(artifact[: len(artifact) // 2])
    return path  # "missing": nothing written


def assert_serves_without_model(server: Server, body: dict[str, float]) -> None:
    """503s where a model is needed, liveness 200, on many connections; the process stays up."""
    pids = worker_pids(server)
    assert len(pids) == 2
    for _ in range(10):  # new connections: both workers answer
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 503
        assert health.json() == UNHEALTHY
        assert httpx.get(f"{server.url}/health/live", timeout=10).status_code == 200
        scored = fresh_post(server, body)
        assert scored.status_code == 503
        assert scored.json()["error"] == "model_unavailable"
        assert scored.json()["detail"]
    batch = httpx.post(
        f"{server.url}{SCORE}/batch", json={"transactions": [body]}, headers=HEADERS, timeout=10
    )
    assert batch.status_code == 503
    assert batch.json()["error"] == "model_unavailable"
    info = httpx.get(f"{server.url}/v1/model-info", headers=HEADERS, timeout=10)
    assert info.status_code == 503
    assert server.process.poll() is None
    assert worker_pids(server) == pids  # no worker died and was replaced
    samples = scrape(server)
    assert total(samples, "fraud_model_loaded") == 0
    assert total(samples, "fraud_model_load_failures_total") == 2


@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated"])
def test_unloadable_model_gives_503_and_stays_up(
    workdir: Path, model_path: Path, body: dict[str, float], kind: str
) -> None:
    artifact = bad_artifact(workdir, model_path, kind)
    running = start_server(workdir, MODEL_PATH=artifact)
    try:
        assert_serves_without_model(running, body)
        failures = [r for r in log_records(running) if r["message"].startswith("model not loaded")]
        assert len(failures) == 2  # one per worker's start-up
        assert all(r["level"] == "error" for r in failures)
    finally:
        running.stop()


def test_digest_mismatch_is_not_loaded_and_logged_once_per_worker(
    workdir: Path, model_path: Path, body: dict[str, float]
) -> None:
    other_digest = hashlib.sha256(b"some other artifact").hexdigest()
    running = start_server(workdir, MODEL_PATH=model_path, MODEL_SHA256=other_digest)
    try:
        assert_serves_without_model(running, body)
        records = log_records(running)
        mismatches = [r for r in records if "differs from MODEL_SHA256" in r["message"]]
        starts = [r for r in records if r["message"].startswith("Application startup complete")]
        # Each worker loads (and refuses) the artifact once, at start-up; never per request.
        assert len(mismatches) == len(starts) == 2
        assert not [r for r in records if r["message"] == "model loaded"]
    finally:
        running.stop()


def test_matching_digest_is_served(
    server: Server, model_digest: str, body: dict[str, float]
) -> None:
    info = httpx.get(f"{server.url}/v1/model-info", headers=HEADERS, timeout=10)
    assert info.status_code == 200
    assert info.json()["artifact-sha256"] == model_digest
    assert httpx.get(f"{server.url}/health", timeout=10).json() == {
        "status": "healthy",
        "model_loaded": True,
    }
    assert fresh_post(server, body).status_code == 200


# --- (5) request logs ----------------------------------------------------------------------------


def test_one_json_log_line_per_request_without_values_or_keys(
    server: Server, body: dict[str, float]
) -> None:
    distinctive = {"V1": 123.456789, "V7": -98.7654321, "Amount": 4242.171717}
    marked = {**body, **distinctive}
    wrong_key = "wrong-key-6d0c5e1f9a8b7c43"
    run = uuid.uuid4().hex[:12]

    def headers_with(request_id: str) -> dict[str, str]:
        return {**HEADERS, "X-Request-ID": request_id}

    scored = fresh_post(server, marked, headers=headers_with(f"{run}-scored"))
    missing = {name: value for name, value in marked.items() if name != "V28"}
    as_string = {**marked, "V2": "777.777777"}
    unprocessable = [
        fresh_post(server, missing, headers=headers_with(f"{run}-422-missing")),
        fresh_post(server, as_string, headers=headers_with(f"{run}-422-string")),
    ]
    wrong_key_headers = {"X-API-Key": wrong_key, "X-Request-ID": f"{run}-403-wrong"}
    forbidden = [
        fresh_post(server, marked, headers=wrong_key_headers),
        fresh_post(
            server,
            marked,
            headers={"X-Request-ID": f"{run}-403-query"},
            params={"api_key": API_KEY, "X-API-Key": API_KEY},
        ),
    ]
    unsafe_ids = ["bad id <script>alert(1)</script>", "r" * 300]
    regenerated = [fresh_post(server, marked, headers=headers_with(rid)) for rid in unsafe_ids]

    assert scored.status_code == 200
    assert scored.headers["X-Request-ID"] == f"{run}-scored"
    assert [r.status_code for r in unprocessable] == [422, 422]
    assert [r.status_code for r in forbidden] == [403, 403]
    for response, unsafe in zip(regenerated, unsafe_ids, strict=True):
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] != unsafe
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    expected = {
        f"{run}-scored": (200, SCORE),
        f"{run}-422-missing": (422, SCORE),
        f"{run}-422-string": (422, SCORE),
        f"{run}-403-wrong": (403, SCORE),
        f"{run}-403-query": (403, SCORE),
        **{r.headers["X-Request-ID"]: (200, SCORE) for r in regenerated},
    }

    def lines_for_all() -> dict[str, list[dict[str, Any]]] | None:
        by_id: dict[str, list[dict[str, Any]]] = {}
        for record in log_records(server):  # every line is one JSON object
            if record.get("request_id") in expected:
                by_id.setdefault(record["request_id"], []).append(record)
        return by_id if set(by_id) == set(expected) else None

    by_id = wait_for(lines_for_all, "a log line for every request")  # logged after the response
    for request_id, (status, path) in expected.items():
        (line,) = by_id[request_id]  # exactly one line per request
        assert line["status"] == status
        assert line["method"] == "POST"
        assert line["path"] == path  # never the query string
        assert isinstance(line["latency_ms"], int | float)
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line["time"])
        if status == 200:
            assert line["model_version"] == "1.0.0"
            assert line["score_bucket"] in range(0, 101, 10)
    assert by_id[f"{run}-scored"][0]["score_bucket"] == scored.json()["fraud-score"] // 10 * 10

    text = server.logs()
    leaks = [*map(str, distinctive.values()), "777.777777", API_KEY, wrong_key, *unsafe_ids]
    for leaked in [*leaks, "<script>"]:
        assert leaked not in text
    records = log_records(server)
    assert not [r for r in records if r["logger"] == "uvicorn.access"]
    assert "HTTP/1.1" not in text  # uvicorn's access log format


def test_plain_uvicorn_logs_the_same_json_lines_without_a_key_sent_in_the_query(
    tmp_path: Path, onnx_model_path: Path, body: dict[str, float]
) -> None:
    """`uvicorn app.main:app --workers 2` configures its own logging before it imports the app:
    its access log would print the query string, key and all."""
    server = start_uvicorn(tmp_path, workers=2, MODEL_PATH=onnx_model_path)
    run = uuid.uuid4().hex[:12]
    try:
        forbidden = fresh_post(
            server,
            body,
            headers={"X-Request-ID": f"{run}-query"},
            params={"api_key": API_KEY},
        )
        scored = fresh_post(server, body, headers={**HEADERS, "X-Request-ID": f"{run}-scored"})

        def lines_for_both() -> dict[str, dict[str, Any]] | None:
            records = [json.loads(line) for line in server.logs().splitlines() if line[:1] == "{"]
            by_id = {r["request_id"]: r for r in records if "request_id" in r}
            return by_id if {f"{run}-query", f"{run}-scored"} <= set(by_id) else None

        by_id = wait_for(lines_for_both, "a JSON log line for each request")
    finally:
        server.stop()
    assert (forbidden.status_code, scored.status_code) == (403, 200)
    assert by_id[f"{run}-query"]["path"] == SCORE
    assert by_id[f"{run}-scored"]["score_bucket"] == scored.json()["fraud-score"] // 10 * 10
    text = server.logs()
    assert API_KEY not in text
    assert "HTTP/1.1" not in text  # uvicorn's access log format


# --- (6) metrics ---------------------------------------------------------------------------------


def test_metrics_sum_over_workers(server: Server, body: dict[str, float]) -> None:
    n = 60
    route = {"route": SCORE, "method": "POST", "status": "200"}
    before = scrape(server)
    answered = send_on_own_connections(server, n, json=body, headers=HEADERS)
    assert [response.status_code for response, _ in answered] == [200] * n
    assert {pid for _, pid in answered} == worker_pids(server)  # both workers counted some

    def grown(name: str, **labels: str) -> Callable[[], float]:
        return lambda: total(scrape(server), name, **labels) - total(before, name, **labels)

    # The request counter is updated once the response is sent: poll, then expect exactly N.
    wait_for(lambda: grown("fraud_http_requests_total", **route)() >= n, "the request counter")
    assert grown("fraud_http_requests_total", **route)() == n
    assert grown("fraud_predictions_total")() == n
    assert grown("fraud_http_request_duration_seconds_count", **route)() == n

    after = scrape(server)
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in after.items()
        if name == "fraud_http_request_duration_seconds_bucket" and set(route.items()) <= labels
    }
    assert {"0.001", "0.0025", "0.1", "0.2", "1.0", "+Inf"} <= set(buckets)
    cumulative = [buckets[le] for le in sorted(buckets, key=float)]  # float("+Inf") is inf
    assert cumulative == sorted(cumulative)
    assert buckets["+Inf"] == total(after, "fraud_http_request_duration_seconds_count", **route)


def scored_rows(server: Server, rows: Any) -> list[tuple[dict[str, float], int]]:
    transactions = [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in rows]
    batch = {"transactions": transactions}
    response = httpx.post(f"{server.url}{SCORE}/batch", json=batch, headers=HEADERS, timeout=30)
    assert response.status_code == 200
    scores = [result["fraud-score"] for result in response.json()["results"]]
    return list(zip(transactions, scores, strict=True))


def test_drift_signal_moves_with_high_scoring_traffic(server: Server) -> None:
    """rate(fraud_score_sum) / rate(fraud_score_count) against fraud_score_baseline_mean."""
    features, labels = generate(rows=20_000, seed=99, fraud_rate=0.05)
    flagged = [(t, s) for t, s in scored_rows(server, features[labels == 1][:400]) if s >= 50]
    legitimate = [t for t, _ in scored_rows(server, features[labels == 0][:40])]
    assert len(flagged) >= 40, "the session model should flag most generated fraud"
    burst = 40

    def burst_mean(transactions: list[dict[str, float]]) -> float:
        before = scrape(server)
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=10) as client:
            for transaction in transactions:
                assert client.post(SCORE, json=transaction).status_code == 200
        after = scrape(server)
        count = total(after, "fraud_score_count") - total(before, "fraud_score_count")
        assert count == len(transactions)
        return (total(after, "fraud_score_sum") - total(before, "fraud_score_sum")) / count

    samples = scrape(server)
    baseline = total(samples, "fraud_score_baseline_mean")
    spread = total(samples, "fraud_score_baseline_stddev")
    assert spread > 0
    legitimate_mean = burst_mean(legitimate[:burst])
    fraud_mean = burst_mean([t for t, _ in flagged[:burst]])
    assert fraud_mean >= 50
    # A drift alert on |mean - baseline| > 3 sigma fires for the fraud burst, not the legitimate.
    assert (fraud_mean - baseline) / spread > 3
    assert abs(legitimate_mean - baseline) / spread < 1


# --- (7) a killed worker --------------------------------------------------------------------------


def test_killed_worker_is_replaced_and_service_keeps_answering(
    workdir: Path, model_path: Path, body: dict[str, float]
) -> None:
    running = start_server(workdir, MODEL_PATH=model_path)
    try:
        pids = worker_pids(running)
        assert len(pids) == 2
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not is_running(victim), "the killed worker to be gone")
        # The survivor answers every new connection while the supervisor restarts the other.
        for _ in range(20):
            assert fresh_post(running, body).status_code == 200

        def replacement() -> set[int] | None:
            now = worker_pids(running)
            return now if len(now) == 2 and victim not in now else None

        replaced = wait_for(replacement, "the supervisor to start a replacement worker", timeout=60)
        wait_for(
            lambda: running.logs().count("Application startup complete") >= 3,
            "the replacement worker's start-up",
            timeout=60,
        )
        assert len(replaced & pids) == 1
        for _ in range(20):
            assert fresh_post(running, body).status_code == 200
        samples = scrape(running)  # parses after a worker died mid-life
        assert total(samples, "fraud_worker_starts_total") == 3
        assert total(samples, "fraud_model_loaded") == 1  # the dead worker's gauge is gone
        assert total(samples, "fraud_predictions_total") == 40  # the dead worker's count stays
        assert running.process.poll() is None
    finally:
        running.stop()
