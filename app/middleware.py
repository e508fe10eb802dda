"""Per-request context: request id, latency metrics, one JSON log line, and the last-resort 500."""

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import is_oip_path, json_response

log = logging.getLogger("app.request")

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_from(scope: Scope) -> str:
    """The caller's X-Request-ID when it is short and plain and holds no accepted key (it is
    echoed and logged), else a fresh one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            key_ring = scope["app"].state.key_ring
            if _SAFE_REQUEST_ID.fullmatch(candidate) and not key_ring.found_in(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it sits on the hot path of every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        response_started = False

        async def send_with_context(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                for name, value in state.get("response_headers", {}).items():
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except asyncio.CancelledError:
            # Cancelled at the end of a graceful shutdown: app.protocol answers it 503 itself;
            # an answer already under way is cut short, and the log line says so.
            if not response_started:
                status = 503
            else:
                state["cut_short"] = True
            raise
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if not response_started:
                message_key = "error" if is_oip_path(scope["path"]) else "detail"
                body = {message_key: "Internal server error", "request_id": request_id}
                await json_response(body, 500)(scope, receive, send_with_context)
        finally:
            self._record(scope, state, status, time.perf_counter() - started)

    @staticmethod
    def _record(scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        route = scope.get("route")
        route_path = getattr(route, "path", None) or "unmatched"
        metrics.observe_request(route_path, scope["method"], status, seconds)
        path = scope["path"]
        if path != route_path:  # not a fixed route's: the client's own text, perhaps its key
            path = scope["app"].state.key_ring.redact(path)
        line = {
            "method": scope["method"],
            "path": path[:256],
            "route": route_path,
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
            "request_id": state["request_id"],
        }
        for key in ("model_version", "score_bucket", "transactions", "client", "cut_short"):
            if key in state:
                line[key] = state[key]
        log.info("request", extra=line)
