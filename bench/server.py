"""Start `python -m app` on a free loopback port, wait until every worker serves, then stop it."""

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procfs

HOST = "127.0.0.1"
WORKERS = 2
# Several 200s in a row: with one socket per worker, successive connections may reach either one.
HEALTHY_IN_A_ROW = 6
# Only what the service needs: no API_KEYS, MODEL_SHA256 or MODEL_ENGINE leaking in from a shell.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
UNLIMITED_RATE = "100000000/minute"


class ServerError(RuntimeError):
    """The service did not start or did not answer as expected."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    api_key: str
    log_path: Path
    workers: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def engines(self) -> list[str]:
        """The engine each worker logged when it loaded the model."""
        return [
            line.get("engine", "?")
            for line in _json_lines(self.log_text())
            if _is(line, "model loaded")
        ]

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL whatever is left after a grace period."""
        _signal_group(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _signal_group(self.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        deadline = time.monotonic() + 5
        while procfs.group_pids(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if procfs.group_pids(self.pid):  # a worker outlived its supervisor
            _signal_group(self.pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has already gone
        os.killpg(pgid, signum)


def service_env(
    model: Path, engine: str | None, api_key: str, run_dir: Path, extra: dict[str, str]
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key in _INHERITED}
    repo = str(Path(__file__).resolve().parents[1])
    env |= {
        "PYTHONPATH": repo,
        "API_KEY": api_key,
        "MODEL_PATH": str(model),
        "RATE_LIMIT": UNLIMITED_RATE,  # the benchmark is one client far over any real limit
        "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics"),
    }
    if engine is not None:  # None: MODEL_ENGINE unset, the service's own default (auto)
        env["MODEL_ENGINE"] = engine
    env |= extra
    return env


def start(
    run_dir: Path,
    model: Path,
    engine: str | None,
    balance: str,
    *,
    http: str = "bounded",
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> Server:
    """A fresh server whose workers have all loaded the model and answer /health with 200."""
    port, api_key = free_port(), secrets.token_urlsafe(24)
    log_path = run_dir / f"server-{port}.log"
    command = [
        sys.executable, "-m", "app", "--host", HOST, "--port", str(port), "--workers", str(WORKERS),
        "--timeout-keep-alive", "75", "--balance", balance, "--http", http,
    ]  # fmt: skip
    with log_path.open("wb") as log:  # a file, never a pipe nobody drains
        process = subprocess.Popen(
            command,
            cwd=run_dir,  # no .env there: this environment is the whole configuration
            env=service_env(model, engine, api_key, run_dir, env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: measured, then stopped, as one
        )
    server = Server(process, port, api_key, log_path)
    try:
        _wait_until_ready(server, timeout)
        server.workers = procfs.worker_pids(server.pid)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(f"server exited with {server.process.returncode}:\n{_tail(server)}")
        text = server.log_text()
        if '"model not loaded' in text:
            raise ServerError(f"a worker could not load the model:\n{_tail(server)}")
        if text.count("Application startup complete") >= WORKERS:
            break
        time.sleep(0.2)
    else:
        raise ServerError(f"workers not started in {timeout:.0f} s:\n{_tail(server)}")
    in_a_row = 0
    while in_a_row < HEALTHY_IN_A_ROW:
        if time.monotonic() > deadline:
            raise ServerError(f"/health not 200 in {timeout:.0f} s:\n{_tail(server)}")
        status, _ = request(server, "GET", "/health")
        in_a_row = in_a_row + 1 if status == 200 else 0
        time.sleep(0.05)


def request(
    server: Server,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request on a fresh connection (http.client: no proxy settings apply to loopback)."""
    connection = http.client.HTTPConnection(HOST, server.port, timeout=30)
    sent = {"X-API-Key": server.api_key, "Content-Type": "application/json", **(headers or {})}
    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        connection.close()


def check_answer(server: Server, path: str, body: bytes, headers: dict[str, str]) -> None:
    """One request of a scenario before measuring it, so a misconfiguration fails in seconds."""
    status, answer = request(server, "POST", path, body, headers)
    if status != 200:
        raise ServerError(f"POST {path} answered {status}: {answer[:300]!r}")


def log_summary(server: Server) -> dict[str, Any]:
    """Statuses of the requests the server logged, and its warnings and errors (never values)."""
    statuses: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    problems: list[str] = []
    for line in _json_lines(server.log_text()):
        if _is(line, "request"):
            statuses[str(line.get("status"))] += 1
        elif line.get("level") in ("warning", "error", "critical"):
            levels[str(line["level"])] += 1
            if len(problems) < 5:
                problems.append(f"{line.get('level')}: {line.get('message')}"[:200])
    return {"statuses": dict(statuses), "problems": dict(levels), "examples": problems}


def _is(line: dict[str, Any], message: str) -> bool:
    return line.get("message") == message


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


def _tail(server: Server, lines: int = 30) -> str:
    return "\n".join(server.log_text().splitlines()[-lines:])
