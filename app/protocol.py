"""The service's HTTP/1.1 protocol: uvicorn's httptools one, with bounds on what a client may hold.

uvicorn's httptools protocol buffers a request's line and headers without limit and waits for them
(and for a body) forever, so one client could hold a worker's memory or all its sockets. This one:
- request line plus headers over HEAD_LIMIT bytes: 431, and nothing of them is kept;
- headers not complete HEAD_TIMEOUT seconds after the request's first byte: 408;
- body not complete BODY_TIMEOUT seconds after the headers: 408, rendered by the app (its log
  line, metrics and error shape), whose next `receive()` raises an HTTPException;
- a Transfer-Encoding other than chunked (`gzip, chunked`): 501, as httptools would read it as
  chunked alone;
- an HTTP/1.1 request without a Host header, or any request with more than one: 400 (RFC 9112
  §3.2 says a server MUST);
- each of these closes the connection politely: the answer, a FIN, then whatever the client still
  sends is read and dropped for LINGER seconds at most, so a client still sending can read it;
  requests pipelined before the refused one are answered first, in order;
- an answer to `Expect: 100-continue` sent before the 100 closes the connection the same way;
- on shutdown an idle keep-alive connection may still bring one request for DRAIN seconds (it is
  answered with `Connection: close` instead of being reset), and a request still waiting for its
  body near the end of the grace period is answered 503 rather than cut off.
Plain uvicorn runs it with `--http app.protocol:BoundedHttpToolsProtocol`.
"""

import asyncio
import logging
import uuid
from typing import Any, Literal, cast

import orjson
from starlette.exceptions import HTTPException
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from app import metrics
from app.errors import message_body

HEAD_LIMIT = 64 * 1024  # request line, headers and the blank line: the load balancer's own limit
HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
LINGER = 2.0
DRAIN = 1.0

log = logging.getLogger("app.request")

_SHUTTING_DOWN = "The service is shutting down: retry the request"
_HEAD_TOO_LARGE = f"Request line and headers larger than {HEAD_LIMIT} bytes"


_UNKNOWN_CODING = "Transfer-Encoding other than chunked is not supported"
_TRANSFER_ENCODING = b"transfer-encoding"
_HOST = b"host"
_NO_HOST = "An HTTP/1.1 request must have a Host header"
_HOSTS = "A request must not have more than one Host header"


def _codings_beyond_chunked(value: bytes) -> bool:
    return any(coding.strip().lower() != b"chunked" for coding in value.split(b","))


class _RefusedInParser(Exception):
    """Raised in a parser callback, after setting _parse_refusal, to stop parsing the request:
    httptools then fails, and uvicorn calls send_400_response, which sends that refusal."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_room = HEAD_LIMIT  # bytes the current request's head may still take
        self._awaiting_head = False  # bytes of a request arrived, its headers are not complete
        self._head_started = 0.0
        self._in_body = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._end_timer: asyncio.TimerHandle | None = None  # end of a linger or of a drain
        self._give_up_timer: asyncio.TimerHandle | None = None
        self._lingering = False  # answered for good: input is dropped until the connection ends
        self._discarding = False  # a body the parser refused: the app answers, input is dropped
        self._draining = False
        self._head_bytes = 0  # of the request line's target and the headers, as parsed
        self._hosts = 0  # Host headers of the request being parsed
        self._parse_refusal: tuple[int, str] | None = None
        self._refusal_after: bytes | None = None  # sent once the requests before it are answered
        self.url = b""

    # --- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte is idle like a kept-alive one (stock uvicorn would
        # keep it forever).
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._end_timer, self._give_up_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._discarding:
            return  # dropped, never kept
        if self._in_body:
            super().data_received(data)
        else:
            if not self._awaiting_head:  # this is the request's first byte
                self._awaiting_head = True
                self._head_started = self.loop.time()
                self.url = b""
            if len(data) <= self._head_room:
                self._head_room -= len(data)
                super().data_received(data)
            else:
                self._feed_within_head_limit(memoryview(data))
        if self._awaiting_head or self._in_body:  # most requests arrive whole: no timer at all
            self._arm_timers()

    def _feed_within_head_limit(self, view: memoryview) -> None:
        """Feed no more than the head's remaining room while a head is incomplete.

        httptools keeps a header's bytes until the header ends, so the limit is enforced on what
        is fed to it. A head that starts in the middle of a read, after a pipelined request's body,
        is counted from the next read on.
        """
        while view:
            if self._in_body or len(view) <= self._head_room:
                if not self._in_body:
                    self._head_room -= len(view)
                super().data_received(view)  # type: ignore[arg-type]
                return
            room, self._head_room = self._head_room, 0
            super().data_received(view[:room])  # type: ignore[arg-type]
            if self._lingering or self.transport.is_closing():
                return
            if not self._in_body and self._head_room == 0:  # still the same head: over the limit
                self._refuse(431, _HEAD_TOO_LARGE)
                return
            view = view[room:]

    def _arm_timers(self) -> None:
        if self._lingering or self.transport.is_closing():
            return
        if self._awaiting_head and self._head_timer is None:
            delay = self._head_started + HEAD_TIMEOUT - self.loop.time()
            self._head_timer = self.loop.call_later(delay, self._head_timed_out)
        elif self._in_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(BODY_TIMEOUT, self._body_timed_out)

    # --- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._awaiting_head:  # a pipelined request, starting inside the previous read
            self._awaiting_head = True
            self._head_started = self.loop.time()
        self._head_bytes = self._hosts = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        lowered = name.lower()
        if lowered == _TRANSFER_ENCODING and _codings_beyond_chunked(value):
            # httptools reads `gzip, chunked` as chunked alone: the body would be taken for
            # what it is not. RFC 9112 §6.1: 501 for a coding the server does not know.
            self._parse_refusal = (501, _UNKNOWN_CODING)
            raise _RefusedInParser
        if lowered == _HOST:
            self._hosts += 1
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        # The bytes fed are counted against HEAD_LIMIT, but not those of a head that begins in
        # the middle of a read (after a pipelined request): its size, from what was parsed.
        method = self.parser.get_method()
        if len(method) + len(b"  HTTP/1.1\r\n\r\n") + self._head_bytes > HEAD_LIMIT:
            self._parse_refusal = (431, _HEAD_TOO_LARGE)
            raise _RefusedInParser
        if self._hosts > 1 or (self._hosts == 0 and self.parser.get_http_version() == "1.1"):
            self._parse_refusal = (400, _HOSTS if self._hosts else _NO_HOST)
            raise _RefusedInParser
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._awaiting_head = False
        self._head_room = HEAD_LIMIT
        self._in_body = True
        super().on_headers_complete()
        if self.expect_100_continue and self.cycle is not None:
            self.cycle.__class__ = _ContinueCycle
            cast(_ContinueCycle, self.cycle).connection = self
        if self._draining and self.cycle is not None:
            self._last_request_before_exit(self.cycle)

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if not self._lingering:
            super().on_response_complete()
            return
        # The connection ends after the requests already read: no keep-alive, nothing new.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.pipeline:
            self._start_asgi_task(*self.pipeline.pop())
        elif self._refusal_after is not None:
            self.transport.write(self._refusal_after)
            self._refusal_after = None
            self._end_with_fin()

    # --- refusals ----------------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._refuse(408, f"Request headers not received within {HEAD_TIMEOUT:g} seconds")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle.response_started:  # answered before reading it all (a 413, a 403): just close
            if cycle.response_complete:
                self.close_politely()
            else:
                cycle.keep_alive = False
            return
        self._refuse_through_app(
            cycle, 408, f"Request body not received within {BODY_TIMEOUT:g} seconds"
        )

    def send_400_response(self, msg: str) -> None:
        # JSON like every other error; a refusal decided inside a parser callback is its own.
        refusal, self._parse_refusal = self._parse_refusal, None
        self._refuse(*(refusal or (400, "Invalid HTTP request")))

    def _refuse(self, status: int, detail: str) -> None:
        """Answer a request the app never saw, log and count it, and close the connection."""
        cycle = self.cycle
        if cycle is not None and self._in_body and not cycle.response_started:
            # The app is waiting for the rest of a body that can never come (a malformed chunk):
            # it answers, as it answers a stalled body's 408, and the connection then closes.
            self._discarding, self._in_body = True, False
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            self._refuse_through_app(cycle, status, detail)
            return
        request_id = uuid.uuid4().hex
        seconds = self.loop.time() - self._head_started
        method = self.parser.get_method().decode("ascii") if self.url else "unknown"
        metrics.observe_request("unmatched", method, status, seconds)
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        key_ring = self.app_state.get("key_ring")
        logged_path = key_ring.redact(path) if key_ring is not None else path
        line: dict[str, Any] = {"method": method, "path": logged_path[:256]}
        line |= {"route": "unmatched", "status": status, "request_id": request_id}
        log.info("request", extra=line | {"latency_ms": round(seconds * 1000, 3)})
        body = orjson.dumps(message_body(path, detail))
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nx-request-id: %s\r\n"
            b"connection: close\r\n\r\n" % (len(body), request_id.encode())
        )
        if self.cycle is not None and not self.cycle.response_complete:
            # Requests before this one are being answered: answer it after them, in order.
            self._stop_reading_requests()
            self._refusal_after = b"".join(head) + body
            return
        self.transport.write(b"".join(head) + body)
        self.close_politely()

    def _refuse_through_app(self, cycle: RequestResponseCycle, status: int, detail: str) -> None:
        """Make the app answer `status` itself: its next receive() raises an HTTPException."""
        cycle.message_event.set()  # a receive() under way returns what came so far...
        cycle.message_event = _Refused(HTTPException(status, detail, {"Connection": "close"}))
        cycle.transport = _ClosingPolitely(self)
        cycle.keep_alive = False

    def _stop_reading_requests(self) -> None:
        self._lingering = True
        for timer in (self._head_timer, self._body_timer, self._give_up_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._give_up_timer = None
        self._unset_keepalive_if_required()
        self.parser = None  # type: ignore[assignment]  # and with it any part of a head it held
        self.url, self.headers = b"", []

    def close_politely(self) -> None:
        """FIN after the answer, then drop what still arrives, for LINGER seconds at most.

        Closing with unread bytes would send a reset, which can destroy the answer before a
        client that is still sending (a huge header, a trickling body) has read it.
        """
        if self._lingering or self.transport.is_closing():
            return
        self._stop_reading_requests()
        self._end_with_fin()

    def _end_with_fin(self) -> None:
        if self._end_timer is not None:
            self._end_timer.cancel()
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._end_timer = self.loop.call_later(LINGER, self.transport.close)

    # --- shutdown ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Called by uvicorn's server for every connection when a SIGTERM starts the shutdown."""
        if self._lingering:  # answered for good already: nothing left to drain
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()
            else:  # requests read before a refusal are still being answered: the last one closes
                self.cycle.keep_alive = False
                self._refusal_after = None
            return
        self._draining = True
        grace = self.config.timeout_graceful_shutdown
        if grace is not None:
            # Before uvicorn cancels what is left, so that the app still answers it.
            self._give_up_timer = self.loop.call_later(
                max(grace - min(0.5, grace / 4), 0), self._give_up
            )
        if self.cycle is None or self.cycle.response_complete:
            # Idle: a request may already be on its way; answer it rather than reset it.
            drain = DRAIN if grace is None else min(DRAIN, grace / 2)
            self._end_timer = self.loop.call_later(drain, self._drain_ended)
        else:
            self._last_request_before_exit(self.cycle)

    def _last_request_before_exit(self, cycle: RequestResponseCycle) -> None:
        cycle.keep_alive = False

        async def unavailable() -> None:
            # uvicorn answers a request it cancels at the end of the grace period with a plain-text
            # 500; this service's errors are JSON, and this one is worth retrying elsewhere.
            body = orjson.dumps(message_body(cycle.scope["path"], _SHUTTING_DOWN))
            headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
            headers.append((b"content-length", str(len(body)).encode()))
            await cycle.send({"type": "http.response.start", "status": 503, "headers": headers})
            await cycle.send({"type": "http.response.body", "body": body, "more_body": False})

        cycle.send_500_response = unavailable  # type: ignore[method-assign]

    def _drain_ended(self) -> None:
        self._end_timer = None
        if (self.cycle is None or self.cycle.response_complete) and not self._awaiting_head:
            self.transport.close()
        # A head on its way is answered once whole (Connection: close), or refused by its 408
        # or, near the end of the grace period, by _give_up.

    def _give_up(self) -> None:
        self._give_up_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self._refuse_through_app(cycle, 503, _SHUTTING_DOWN)
        elif self._awaiting_head and not self._lingering:
            self._refuse(503, _SHUTTING_DOWN)


class _ContinueCycle(RequestResponseCycle):
    """A request that sent `Expect: 100-continue`. Answered before its 100 Continue (a 403, a
    413), its client may never send the body (RFC 9110 §10.1.1), and its next request would be
    read as that body: the answer says `Connection: close`, and the connection then closes."""

    connection: "BoundedHttpToolsProtocol"

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and self.waiting_for_100_continue:
            self.keep_alive = False
            self.transport = _ClosingPolitely(self.connection)
        await super().send(message)


class _Refused(asyncio.Event):
    """A refused request's message event: the app's receive() waits on it, and so it raises.

    Swapped in only when refusing: a wrapper around every request's receive(), held by its
    cycle, would cost each request time and make its cycle garbage for the cyclic collector.
    """

    def __init__(self, refusal: HTTPException) -> None:
        super().__init__()
        self._refusal = refusal

    async def wait(self) -> Literal[True]:
        raise self._refusal

    def set(self) -> None:
        pass  # more body, or the response: nothing to wake any more

    def clear(self) -> None:
        pass


class _ClosingPolitely(asyncio.Transport):
    """What a refused request's cycle writes to: closing it closes the connection politely."""

    def __init__(self, protocol: BoundedHttpToolsProtocol) -> None:
        super().__init__()
        self._protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol.transport.is_closing()

    def close(self) -> None:
        self._protocol.close_politely()
