"""A throw-away redis-server on loopback for the by-id scenarios, filled by the real loader."""

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.server import HOST, free_port

PREFIX = "bench:v1"
BENCH_TIMEOUT_MS = 1000


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def uri(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def available() -> bool:
    return shutil.which("redis-server") is not None


def start_redis(workdir: Path, port: int | None = None) -> RedisServer:
    """redis-server on a (free) loopback port, without persistence, answering PING; or raise."""
    port = port or free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    server = RedisServer(process, port)
    try:
        _wait_for_ping(server)
    except BaseException:
        server.stop()
        raise
    return server


def start(workdir: Path, source: Path) -> RedisServer:
    """A Redis for the bench, filled by `python -m app.featurestore materialize` from `source`."""
    server = start_redis(workdir)
    try:
        loader = subprocess.run(
            [sys.executable, "-m", "app.featurestore", "materialize", "--source", str(source),
             "--uri", server.uri, "--prefix", PREFIX],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )  # fmt: skip
        if loader.returncode != 0:
            raise RuntimeError(f"materialize failed ({loader.returncode}): {loader.stderr[-500:]}")
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_ping(server: RedisServer, timeout: float = 20) -> None:
    client = redis.Redis(host=HOST, port=server.port, socket_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {server.process.returncode}")
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"redis-server did not answer PING within {timeout:.0f} s")
