"""BoundedHttpToolsProtocol in-process, under a toy app that can hang where the service cannot."""

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from app.protocol import BoundedHttpToolsProtocol
from tests.server import closed_by_server, free_port, read_response, wait_for

GRACE = 1
KEEP_ALIVE = 2


async def hangs_on_stuck(scope: Scope, receive: Receive, send: Send) -> None:
    """200 for every path but /stuck, which never answers (not even waiting for a body)."""
    if scope["path"] == "/stuck":
        await asyncio.Event().wait()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def server() -> Iterator[uvicorn.Server]:
    config = uvicorn.Config(
        hangs_on_stuck,
        host="127.0.0.1",
        port=free_port(),
        http=BoundedHttpToolsProtocol,
        loop="uvloop",
        lifespan="off",
        log_config=None,
        timeout_graceful_shutdown=GRACE,
        timeout_keep_alive=KEEP_ALIVE,
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run)  # not the main thread: no signal handlers
    thread.start()
    wait_for(lambda: running.started, "the server to start", timeout=10)
    try:
        yield running
    finally:
        running.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive()


def connect(server: uvicorn.Server) -> socket.socket:
    return socket.create_connection((server.config.host, server.config.port), timeout=10)


def test_request_hung_in_the_app_is_cancelled_at_the_grace_period_with_a_json_503(
    server: uvicorn.Server,
) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /stuck HTTP/1.1\r\nHost: test\r\n\r\n")
        time.sleep(0.2)
        asked = time.monotonic()
        server.should_exit = True
        response = read_response(sock, timeout=GRACE + 5)
        waited = time.monotonic() - asked
        assert closed_by_server(sock)
    # uvicorn's own answer to a cancelled request is a plain-text 500.
    assert response.status == 503
    assert response.headers["content-type"] == "application/json"
    assert response.headers["connection"] == "close"
    detail = "The service is shutting down: retry the request"
    assert json.loads(response.body) == {"detail": detail}
    assert GRACE <= waited < GRACE + 2


def test_connection_that_never_sends_a_byte_is_closed_after_the_keep_alive(
    server: uvicorn.Server,
) -> None:
    """uvicorn arms its keep-alive timer after a response only: a silent connection stayed."""
    with connect(server) as sock:
        opened = time.monotonic()
        assert closed_by_server(sock, timeout=KEEP_ALIVE + 5)
        assert KEEP_ALIVE - 0.5 <= time.monotonic() - opened < KEEP_ALIVE + 3
