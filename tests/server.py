"""A real `python -m app` (uvicorn, 2 workers), or plain uvicorn, on 127.0.0.1 for process tests."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, ROOT

SCORE = "/v1/fraud-score"


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
    command = ("-m", "app", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers))
    return _launch(workdir, port, (*command, *extra_args), workers, timeout, env)


def start_uvicorn(
    workdir: Path, *args: str, workers: int = 1, timeout: float = 90, **env: Any
) -> Server:
    """Plain `uvicorn app.main:app` (not the start command), as someone might run it."""
    port = free_port()
    command = ("-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port))
    if workers > 1:
        command += ("--workers", str(workers))
    return _launch(workdir, port, (*command, *args), workers, timeout, env)


def _launch(
    workdir: Path,
    port: int,
    command: tuple[str, ...],
    workers: int,
    timeout: float,
    env: dict[str, Any],
) -> Server:
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, *command],
            cwd=workdir,  # no .env there: the test's environment is the whole configuration
            env=service_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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


def run_in_repo(*command: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root and capture its output (never raises on failure)."""
    return subprocess.run(
        [str(part) for part in command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Poll until `condition()` is truthy and return its value; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server) -> Samples:
    """Every sample of /metrics, keyed by name and labels (the text must parse)."""
    return samples_of(httpx.get(f"{server.url}/metrics", timeout=10))


def samples_of(response: httpx.Response) -> Samples:
    """The samples of one /metrics answer."""
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (key, have), value in samples.items() if key == name and wanted <= have)


def log_records(server: Server) -> list[dict[str, Any]]:
    """The server's output, one JSON object per line (any other line fails the test)."""
    records = []
    for line in server.logs().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"a log line that is not JSON: {line[:300]!r}")
    return records


def worker_pids(server: Server) -> set[int]:
    """The supervisor's worker processes (its other child is multiprocessing's resource tracker)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server.process.pid and b"spawn_main" in cmdline:
            pids.add(int(entry.name))
    return pids


def is_running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has closed its sockets)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def worker_of_connection(server: Server, pids: set[int]) -> dict[int, int]:
    """Client port → pid of the worker holding that established connection to the service.

    /proc/net/tcp lists each socket's ports, state and inode; /proc/<pid>/fd names the inodes a
    process holds. A connection held by a worker was accepted, and is answered, by that worker.
    """
    port = int(server.url.rsplit(":", 1)[1])
    client_port_of_inode = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
            client_port_of_inode[fields[9]] = int(fields[2].split(":")[1], 16)
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            match = re.fullmatch(r"socket:\[(\d+)\]", target)
            if match and match.group(1) in client_port_of_inode:
                owners[client_port_of_inode[match.group(1)]] = pid
    return owners


def client_port(response: httpx.Response) -> int:
    """The local port of the (still open, keep-alive) connection that carried `response`."""
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


def send_on_own_connections(
    server: Server, count: int, path: str = SCORE, method: str = "POST", **kwargs: Any
) -> list[tuple[httpx.Response, int]]:
    """`count` requests, each on its own connection, with the pid of the worker that answered it.

    Each worker listens on its own SO_REUSEPORT socket and the kernel hashes each new connection
    to one of them; the connections stay open until every answer is attributed to its worker.
    """
    pids = worker_pids(server)
    clients = [httpx.Client(base_url=server.url, timeout=10) for _ in range(count)]
    try:
        responses = []
        for client in clients:
            response = client.request(method, path, **kwargs)
            responses.append((response, client_port(response)))
        owners = worker_of_connection(server, pids)
    finally:
        for client in clients:
            client.close()
    return [(response, owners[port]) for response, port in responses]


def address(server: Server) -> tuple[str, int]:
    """(host, port) for a raw socket to the service."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def read_response(sock: socket.socket, timeout: float = 20) -> RawResponse:
    """One HTTP/1.1 response framed by Content-Length, read from a raw socket (and no further)."""
    sock.settimeout(timeout)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(1)
        assert chunk, f"connection closed before a complete response: {received[:300]!r}"
        received += chunk
    status_line, *lines = received.decode("latin-1").split("\r\n")[:-2]
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(int(headers["content-length"]) - len(body))
        assert chunk, "connection closed in the middle of a response body"
        body += chunk
    return RawResponse(int(status_line.split()[1]), headers, body)


def closed_by_server(sock: socket.socket, timeout: float = 20) -> bool:
    """True when the server ends the stream cleanly (a FIN, not a reset), saying nothing more."""
    sock.settimeout(timeout)
    return sock.recv(1) == b""
