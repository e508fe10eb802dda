"""A throw-away redis-server on a free loopback port, for the tests that need a real Redis."""

from pathlib import Path

import pytest

from bench.store import RedisServer, available
from bench.store import start_redis as _start_redis

__all__ = ["RedisServer", "requires_redis", "start_redis"]

requires_redis = pytest.mark.skipif(
    not available(),
    reason="redis-server is not installed (scripts/install-test-tools.sh installs it)",
)


def start_redis(workdir: Path, port: int | None = None) -> RedisServer:
    """A throw-away Redis on a (free) loopback port, without persistence; the caller stops it."""
    try:
        return _start_redis(workdir, port)
    except RuntimeError as error:
        pytest.fail(str(error))
