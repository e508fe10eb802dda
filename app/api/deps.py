"""Dependencies the routes share: the loaded scorer, the client's rate limit, a bounded body."""

from typing import Annotated

from fastapi import Depends, Request

from app import metrics
from app.errors import BodyTooLarge, ModelUnavailable, RateLimited
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
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


ScorerDep = Annotated[Scorer, Depends(_scorer_dependency)]
