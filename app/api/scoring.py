"""POST /v1/fraud-score, POST /v1/fraud-score/batch and GET /v1/model-info."""

from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from app import metrics
from app.api.deps import (
    ScorerDep,
    current_scorer,
    enforce_rate_limit,
    explain_options,
    explain_parameters,
    read_body,
)
from app.api.inference import score
from app.api.results import batch_body, result_dicts
from app.config import Settings
from app.errors import JSON, json_response
from app.features import FEATURE_NAMES
from app.parsing import (
    fast_batch,
    fast_transaction,
    matrix_of_models,
    parse_with_fast_path,
    require_json,
    strict,
    strict_batch,
)
from app.schemas import (
    SINGLE_BODY_LIMIT,
    BatchResponse,
    ErrorBody,
    ModelInfo,
    ScoreResponse,
    Transaction,
    batch_request_model,
)

BATCH_BYTES_PER_TRANSACTION = 4 * 1024


def batch_body_limit(max_batch_size: int) -> int:
    """64 KiB plus 4 KiB per allowed transaction (a pretty-printed one takes about 1.3 KiB)."""
    return SINGLE_BODY_LIMIT + max_batch_size * BATCH_BYTES_PER_TRANSACTION


def service_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


def json_body(
    model: type[BaseModel], parameters: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The OpenAPI request body (and query parameters) of a route that parses its own JSON."""
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }
    if parameters:
        extra["parameters"] = parameters
    return extra


def parse_transaction(body: bytes) -> np.ndarray:
    """One transaction object → a (1, 30) matrix, or 422."""
    return parse_with_fast_path(
        body, fast_transaction, lambda judged: matrix_of_models([strict(Transaction, judged)])
    )


def batch_parser(max_batch_size: int) -> Callable[[bytes], np.ndarray]:
    """`{"transactions": [1 … max_batch_size objects]}` → an (n, 30) matrix, or 422."""
    model = batch_request_model(max_batch_size)
    fast = fast_batch(max_batch_size)

    def judged(body: bytes) -> np.ndarray:
        return matrix_of_models(strict_batch(model, Transaction, body, max_batch_size).transactions)

    def parse(body: bytes) -> np.ndarray:
        return parse_with_fast_path(body, fast, judged)

    return parse


def build_router(settings: Settings) -> APIRouter:
    """The /v1 routes; auth and rate limits are attached once, at router level."""
    router = APIRouter(
        prefix="/v1",
        tags=["scoring"],
        dependencies=[Depends(enforce_rate_limit)],
        responses=service_errors(403, 429),
    )
    batch_request = batch_request_model(settings.max_batch_size)
    batch_limit = batch_body_limit(settings.max_batch_size)
    parse_batch = batch_parser(settings.max_batch_size)

    @router.post(
        "/fraud-score",
        response_model=ScoreResponse,
        response_model_exclude_none=True,
        openapi_extra=json_body(Transaction, explain_parameters()),
        responses=service_errors(413, 422, 503),
        summary="Score one transaction",
    )
    async def score_transaction(request: Request) -> Response:
        explain = explain_options(request)
        body = await read_body(request, SINGLE_BODY_LIMIT)
        require_json(request.headers)
        matrix = parse_transaction(body)
        scorer = current_scorer(request)
        scores = await score(request, scorer, matrix, explain, batch=False)
        (result,) = result_dicts(scores, explain)
        return json_response({**result, "model-version": scorer.version})

    @router.post(
        "/fraud-score/batch",
        response_model=BatchResponse,
        response_model_exclude_none=True,
        openapi_extra=json_body(batch_request, explain_parameters()),
        responses=service_errors(413, 422, 503),
        summary=f"Score 1 to {settings.max_batch_size} transactions in one call",
    )
    async def score_batch(request: Request) -> Response:
        explain = explain_options(request)
        body = await read_body(request, batch_limit)
        require_json(request.headers)
        matrix = parse_batch(body)
        scorer = current_scorer(request)
        scores = await score(request, scorer, matrix, explain, batch=True)
        metrics.BATCH_SIZE.observe(len(scores))
        return Response(batch_body(scores, scorer.version, explain), media_type=JSON)

    @router.get(
        "/model-info",
        response_model=ModelInfo,
        responses=service_errors(503),
        summary="What model is served",
    )
    async def model_info(scorer: ScorerDep) -> dict[str, Any]:
        card = scorer.card
        metrics_section = card.get("metrics") or {}
        return {
            "model-version": scorer.version,
            "trained-at": card.get("trained_at"),
            "sklearn-version": (card.get("versions") or {}).get("scikit-learn"),
            "engine": scorer.engine.name,
            "explanation": scorer.engine.explanation,
            "n-estimators": card.get("n_estimators")
            or (card.get("params") or {}).get("n_estimators"),
            "features": list(FEATURE_NAMES),
            "feature-importance": card.get("feature_importance") or {},
            "threshold": scorer.threshold,
            "metrics": {
                "pr-auc": metrics_section.get("pr_auc"),
                "roc-auc": metrics_section.get("roc_auc"),
                "precision": metrics_section.get("precision"),
                "recall": metrics_section.get("recall"),
                "threshold": metrics_section.get("threshold"),
                "rows": metrics_section.get("rows"),
                "train-rows": metrics_section.get("train_rows"),
                "holdout-rows": metrics_section.get("holdout_rows"),
            },
            "artifact-sha256": scorer.sha256,
        }

    return router


def request_models(settings: Settings) -> list[type[BaseModel]]:
    """The request bodies these routes parse themselves, for the OpenAPI components."""
    return [Transaction, batch_request_model(settings.max_batch_size)]
