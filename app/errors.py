"""Error types carrying an HTTP status, and the handlers that render each as JSON `detail`.

Under /v2 (the Open Inference Protocol) the same errors render as OIP's `{"error": message}`:
the shared dependencies (key, rate limit, body size, model) raise them for both protocols.
"""

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response


class ServiceError(Exception):
    """An error with an HTTP status and a message that is safe to show to the client."""

    status_code = 500
    error = "internal_error"
    detail = "Internal server error"

    def __init__(self, detail: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.detail)
        self.detail = detail or self.detail
        self.headers = headers or {}


class InvalidApiKey(ServiceError):
    status_code = 403
    error = "invalid_api_key"
    detail = "Missing or invalid API key: send it in the X-API-Key header"


class BodyTooLarge(ServiceError):
    status_code = 413
    error = "body_too_large"


class ClientClosedRequest(ServiceError):
    """The client went away before its body was whole: nobody to answer, nothing broken.

    499, nginx's code for it, so that it is logged and counted, but not as a server error.
    """

    status_code = 499
    error = "client_closed_request"
    detail = "The client closed the connection before its request was complete"


class RateLimited(ServiceError):
    status_code = 429
    error = "rate_limited"


class UnknownTransaction(ServiceError):
    status_code = 404
    error = "unknown_transaction"
    detail = "No features are stored for this transaction id (never written, or expired)"


class FeatureStoreNotConfigured(ServiceError):
    status_code = 501
    error = "feature_store_not_configured"
    detail = "Scoring by transaction id needs an online feature store: FEATURE_STORE_URI is empty"


class InvalidFeatureRecord(ServiceError):
    status_code = 502
    error = "invalid_feature_record"
    detail = "The features stored for this transaction id break the request body's rules"


class FeatureStoreUnavailable(ServiceError):
    status_code = 503
    error = "feature_store_unavailable"
    detail = "The online feature store cannot be reached or did not answer in time"


class ModelUnavailable(ServiceError):
    status_code = 503
    error = "model_unavailable"
    detail = "No model is loaded; the service cannot score until one is"


JSON = "application/json"


def json_response(
    payload: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(payload),
        status_code=status_code,
        headers=headers,
        media_type=JSON,
    )


MAX_REPORTED_ERRORS = 100  # a 422 lists at most this many (the batch parser stops there too)


def validation_error(error: ValidationError, *prefix: str | int) -> RequestValidationError:
    """A pydantic error as FastAPI's 422, located under `body` like FastAPI's own."""
    return RequestValidationError(
        [{**item, "loc": (*prefix, *item["loc"])} for item in error.errors(include_url=False)]
    )


def _public_error(item: dict[str, Any]) -> dict[str, Any]:
    # FastAPI echoes each bad `input` (and `ctx` may quote it): that would leak feature values.
    return {
        "loc": list(item.get("loc", ())),
        "msg": item.get("msg", ""),
        "type": item.get("type", ""),
    }


OIP_PREFIX = "/v2"


def is_oip_path(path: str) -> bool:
    """Whether a path is one of the Open Inference Protocol's (its errors have OIP's shape)."""
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def message_body(path: str, message: str) -> dict[str, str]:
    """An error without a code of its own: `{"detail"}`, or OIP's `{"error"}` under /v2."""
    return {"error": message} if is_oip_path(path) else {"detail": message}


def _is_oip(request: Request) -> bool:
    return is_oip_path(request.scope["path"])


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    if _is_oip(request):
        return json_response({"error": exc.detail}, exc.status_code, headers=exc.headers)
    return json_response(
        {"detail": exc.detail, "error": exc.error}, exc.status_code, headers=exc.headers
    )


def _without_keys(request: Request, error: dict[str, Any]) -> dict[str, Any]:
    """An error whose `loc` names what the sender wrote (an unknown field): an API key written
    there, in any field's name, comes back as `[api-key]`, as it is logged in a path."""
    key_ring = getattr(request.app.state, "key_ring", None)
    if key_ring is None:
        return error
    location = [key_ring.redact(part) if isinstance(part, str) else part for part in error["loc"]]
    return {**error, "loc": location, "msg": key_ring.redact(error["msg"])}


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        _without_keys(request, _public_error(item)) for item in exc.errors()[:MAX_REPORTED_ERRORS]
    ]
    if _is_oip(request):
        return json_response({"error": "; ".join(error["msg"] for error in errors)}, 400)
    return json_response({"detail": errors}, 422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = message_body(request.scope["path"], exc.detail)
    return json_response(body, exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
