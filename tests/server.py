"""A real `python -m app` (uvicorn, 2 workers) on 127.0.0.1 for process-level tests."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.conftest import API_KEY, ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(**overrides: Any) -> dict[str, str]:
    """A clean environment: nothing inherited from a developer's .env or shell configuration."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "HOME", "LANG", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TMPDIR")
    }
    env |= {"PYTHONPATH": str(ROOT), "API_KEY": API_KEY, "RATE_LIMIT": "1000000/minute"}
    env |= {key: str(value) for key, value in overrides.items() if value is not None}
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        return self.process.returncode


def start_server(
    workdir: Path,
    *,
    workers: int = 2,
    extra_args: tuple[str, ...] = (),
    timeout: float = 90,
    **env: Any,
) -> Server:
    """Start the service and wait until every worker has finished its start-up."""
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), *extra_args],
            cwd=workdir,  # no .env there: the test's environment is the whole configuration
            env=service_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.logs()}")
        if server.logs().count("Application startup complete") >= workers:
            _wait_for_answer(server.url, deadline)
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not ready in {timeout} s:\n{server.logs()}")


def _wait_for_answer(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health/live", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.05)


def run_to_exit(workdir: Path, timeout: float = 60, **env: Any) -> subprocess.CompletedProcess[str]:
    """Run the start command and wait for it to exit (for configurations it must refuse)."""
    return subprocess.run(
        [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=workdir,
        env=service_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
