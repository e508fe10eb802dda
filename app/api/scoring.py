"""POST /v1/fraud-score, POST /v1/fraud-score/batch and GET /v1/model-info."""

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app import metrics
from app.api.deps import ScorerDep, current_scorer, enforce_rate_limit, read_body
from app.config import Settings
from app.errors import json_response, validation_error
from app.features import FEATURE_NAMES, row_values, to_matrix
from app.model import Scorer, Verdict
from app.schemas import (
    BatchResponse,
    ErrorBody,
    ModelInfo,
    ScoreResponse,
    Transaction,
    batch_request_model,
)

SINGLE_BODY_LIMIT = 64 * 1024
BATCH_BYTES_PER_TRANSACTION = 4 * 1024


def batch_body_limit(max_batch_size: int) -> int:
    """64 KiB plus 4 KiB per allowed transaction (a pretty-printed one takes about 1.3 KiB)."""
    return SINGLE_BODY_LIMIT + max_batch_size * BATCH_BYTES_PER_TRANSACTION


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses its own JSON (see `_parse`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule: no Content-Type, application/json, or an application/*+json type."""
    if content_type is None:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _parse(model: type[BaseModel], request: Request, body: bytes) -> Any:
    if not _is_json(request.headers.get("content-type")):
        raise RequestValidationError(
            [
                {
                    "loc": ("body",),
                    "msg": "Content-Type must be application/json",
                    "type": "content_type",
                }
            ]
        )
    # pydantic-core's own JSON parser: one pass from bytes to a validated object, and it reports
    # NaN/Infinity tokens, overflowing literals and huge integers as 422s (json.loads would not).
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise validation_error(error, "body") from None


async def _score(scorer: Scorer, rows: list[tuple[float, ...]]) -> list[Verdict]:
    matrix = to_matrix(rows)
    # ONNX scores a few rows in microseconds: cheaper inline than a threadpool hop. Anything
    # slower (scikit-learn, big batches) runs in the threadpool so the event loop keeps serving.
    if scorer.engine.name == "onnx" and len(rows) <= 64:
        verdicts = scorer.score(matrix)
    else:
        verdicts = await run_in_threadpool(scorer.score, matrix)
    metrics.observe_verdicts(verdicts)
    return verdicts


def _result(verdict: Verdict) -> dict[str, Any]:
    return {
        "fraud-score": verdict.fraud_score,
        "is-fraud": verdict.is_fraud,
        "ood-warning": verdict.ood_warning,
    }


def build_router(settings: Settings) -> APIRouter:
    """The /v1 routes; auth and rate limits are attached once, at router level."""
    router = APIRouter(
        prefix="/v1",
        tags=["scoring"],
        dependencies=[Depends(enforce_rate_limit)],
        responses=_errors(403, 429),
    )
    batch_request = batch_request_model(settings.max_batch_size)
    batch_limit = batch_body_limit(settings.max_batch_size)

    @router.post(
        "/fraud-score",
        response_model=ScoreResponse,
        openapi_extra=_json_body(Transaction),
        responses=_errors(413, 422, 503),
        summary="Score one transaction",
    )
    async def score_transaction(request: Request) -> Response:
        transaction = _parse(Transaction, request, await read_body(request, SINGLE_BODY_LIMIT))
        scorer = current_scorer(request)
        (verdict,) = await _score(scorer, [row_values(transaction)])
        request.state.model_version = scorer.version
        request.state.score_bucket = verdict.fraud_score // 10 * 10
        return json_response({**_result(verdict), "model-version": scorer.version})

    @router.post(
        "/fraud-score/batch",
        response_model=BatchResponse,
        openapi_extra=_json_body(batch_request),
        responses=_errors(413, 422, 503),
        summary=f"Score 1 to {settings.max_batch_size} transactions in one call",
    )
    async def score_batch(request: Request) -> Response:
        batch = _parse(batch_request, request, await read_body(request, batch_limit))
        scorer = current_scorer(request)
        verdicts = await _score(scorer, [row_values(item) for item in batch.transactions])
        metrics.BATCH_SIZE.observe(len(verdicts))
        request.state.model_version = scorer.version
        request.state.transactions = len(verdicts)
        return json_response(
            {"model-version": scorer.version, "results": [_result(v) for v in verdicts]}
        )

    @router.get(
        "/model-info",
        response_model=ModelInfo,
        responses=_errors(503),
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


def request_schemas(settings: Settings) -> dict[str, dict[str, Any]]:
    """JSON schemas of the request bodies, for the OpenAPI components the routes refer to."""
    batch = batch_request_model(settings.max_batch_size)
    schemas = {"Transaction": Transaction.model_json_schema()}
    batch_schema = batch.model_json_schema(ref_template="#/components/schemas/{model}")
    batch_schema.pop("$defs", None)
    schemas[batch.__name__] = batch_schema
    return schemas
