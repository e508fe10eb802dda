"""A throw-away redis-server on a free loopback port, for the tests that need a real Redis."""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.server import free_port, wait_for

requires_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (scripts/install-test-tools.sh installs it)",
)


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_redis(workdir: Path, port: int | None = None) -> RedisServer:
    """A throw-away Redis on a (free) loopback port, without persistence; the caller stops it."""
    port = port or free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    server = RedisServer(process, port)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited with {process.returncode}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, "redis-server to answer PING", timeout=20)
    except BaseException:
        server.stop()
        raise
    finally:
        client.close()
    return server
