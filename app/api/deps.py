"""Dependencies the routes share: the loaded scorer, the client's rate limit, a bounded body."""

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect

from app import metrics
from app.api.inference import NO_EXPLAIN, Explain
from app.errors import BodyTooLarge, ClientClosedRequest, ModelUnavailable, RateLimited
from app.model import Scorer
from app.security import require_api_key

ApiClient = Annotated[str, Depends(require_api_key)]


def current_scorer(request: Request) -> Scorer:
    """The worker's loaded model, or 503 while there is none."""
    scorer: Scorer | None = request.app.state.scorer
    if scorer is None:
        raise ModelUnavailable
    return scorer


async def _scorer_dependency(request: Request) -> Scorer:
    # async: FastAPI would run a plain def dependency in the threadpool.
    return current_scorer(request)


async def enforce_rate_limit(request: Request, client: ApiClient) -> None:
    """429 once this client has used its RATE_LIMIT; the X-RateLimit-* headers either way."""
    decision = await request.app.state.limiter.check(client)
    if not decision.allowed:
        metrics.RATE_LIMITED.inc()
        raise RateLimited(
            f"Rate limit exceeded: {request.app.state.settings.rate_limit}", decision.headers
        )
    request.state.response_headers = decision.headers


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes, announced or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body larger than {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"Request body larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientClosedRequest from None
    return b"".join(chunks)


MAX_REASONS = 30
_BOOLEANS = {"true": True, "false": False}


def explain_options(request: Request) -> Explain:
    """`explain` (true/false) and `max_reasons` (1-30), or 422 naming the bad parameter.

    Called by the routes first thing, not a FastAPI dependency: each dependency costs the single
    route ~10 % of its CPU in FastAPI's solver. explain_parameters() documents what it reads.
    """
    query = request.query_params
    if "explain" not in query and "max_reasons" not in query:
        return NO_EXPLAIN
    problems = []
    enabled = _BOOLEANS.get(query.get("explain", "false").lower())
    if enabled is None:
        problems.append(("explain", "Input should be true or false", "bool_parsing"))
    raw_max = query.get("max_reasons", "3")
    # Two significant digits at most: int() of a longer string may refuse (past 4,300 digits).
    significant = raw_max.lstrip("0")
    well_formed = raw_max.isascii() and raw_max.isdigit() and len(significant) <= 2
    max_reasons = int(significant or "0") if well_formed else 0
    if not 1 <= max_reasons <= MAX_REASONS:
        problems.append(
            ("max_reasons", f"Input should be an integer from 1 to {MAX_REASONS}", "max_reasons")
        )
    if problems:
        raise RequestValidationError(
            [{"loc": ("query", name), "msg": msg, "type": kind} for name, msg, kind in problems]
        )
    return Explain(bool(enabled), max_reasons)


def explain_parameters() -> list[dict[str, Any]]:
    """The OpenAPI description of the parameters `explain_options` reads."""
    return [
        {
            "name": "explain",
            "in": "query",
            "required": False,
            "description": "true: each result also carries `reasons` and `baseline`",
            "schema": {"type": "boolean", "default": False},
        },
        {
            "name": "max_reasons",
            "in": "query",
            "required": False,
            "description": "how many reasons per result, largest contribution first (with explain)",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_REASONS, "default": 3},
        },
    ]


ScorerDep = Annotated[Scorer, Depends(_scorer_dependency)]
