"""GET and HEAD /health (readiness), /health/live (liveness), /metrics: open, for machines."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app import metrics
from app.errors import json_response
from app.schemas import Health, Liveness

router = APIRouter(tags=["operations"])

_HEALTHY = {"status": "healthy", "model_loaded": True}
_UNHEALTHY = {"status": "unhealthy", "model_loaded": False}


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def readiness(request: Request) -> Response:
    """200 while a model is loaded; 503 otherwise, so the load balancer sends traffic elsewhere."""
    if request.app.state.scorer is None:
        return json_response(_UNHEALTHY, 503)
    return json_response(_HEALTHY)


@router.get("/health/live", response_model=Liveness)
async def liveness() -> Response:
    """200 while the process serves, model or not: restarting would not bring a model back."""
    return json_response({"status": "alive"})


def answer_head_too(router: APIRouter, *routes: tuple[str, Callable[..., Any]]) -> None:
    """HEAD on these GET routes, for probes and operators' `curl -I` (RFC 9110: a server that
    answers GET answers HEAD): the same status and headers, and no body (uvicorn sends none).
    Not in the OpenAPI document, which would list the same operation twice."""
    for path, endpoint in routes:
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def prometheus_metrics() -> Response:
    """Prometheus text, summed over all workers (reads files: a plain def, in the threadpool)."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


answer_head_too(
    router, ("/health", readiness), ("/health/live", liveness), ("/metrics", prometheus_metrics)
)
