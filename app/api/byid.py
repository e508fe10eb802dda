"""POST /v1/fraud-score/by-id and /by-id/batch: score the features the online store holds."""

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from app import metrics
from app.api.deps import (
    current_scorer,
    enforce_rate_limit,
    explain_options,
    explain_parameters,
    read_body,
)
from app.api.inference import Explain, require_explainable, score
from app.api.results import result_dicts
from app.api.scoring import SINGLE_BODY_LIMIT, json_body, service_errors
from app.config import Settings
from app.errors import (
    FeatureStoreNotConfigured,
    FeatureStoreUnavailable,
    InvalidFeatureRecord,
    UnknownTransaction,
    json_response,
)
from app.featurestore.online import FeatureStoreUnavailable as StoreDown
from app.featurestore.online import Fetched, OnlineStore
from app.model import Scorer
from app.parsing import require_json, strict
from app.schemas import ByIdBatchResponse, ByIdRequest, ByIdResponse, by_id_batch_request_model

# An id is at most 128 characters: 160 bytes a quoted id, with separators.
BYTES_PER_ID = 160
_NOT_SCORED = {"not_found": "not_found", "invalid": "invalid_record"}


def online_store(request: Request) -> OnlineStore:
    """The worker's online store client, or 501 when FEATURE_STORE_URI is empty."""
    store: OnlineStore | None = request.app.state.feature_store
    if store is None:
        raise FeatureStoreNotConfigured
    return store


async def _fetch(store: OnlineStore, ids: Sequence[str]) -> Fetched:
    try:
        return await store.fetch(ids)
    except StoreDown as error:
        raise FeatureStoreUnavailable(
            error.detail, headers={"Retry-After": str(error.retry_after)}
        ) from None


async def _scored(
    request: Request, scorer: Scorer, fetched: Fetched, explain: Explain, *, batch: bool
) -> list[dict[str, Any]]:
    """The found records' results, in request order (none found: nothing to score)."""
    if not len(fetched.matrix):
        return []
    scores = await score(request, scorer, fetched.matrix, explain, batch=batch)
    return result_dicts(scores, explain)


def build_router(settings: Settings) -> APIRouter:
    """The by-id routes: the same key, rate limit and errors as the raw /v1 routes."""
    router = APIRouter(
        prefix="/v1",
        tags=["scoring by transaction id"],
        dependencies=[Depends(enforce_rate_limit)],
        responses=service_errors(403, 429),
    )
    batch_request = by_id_batch_request_model(settings.max_batch_size)
    batch_limit = SINGLE_BODY_LIMIT + settings.max_batch_size * BYTES_PER_ID

    @router.post(
        "/fraud-score/by-id",
        response_model=ByIdResponse,
        response_model_exclude_none=True,
        openapi_extra=json_body(ByIdRequest, explain_parameters()),
        responses=service_errors(404, 413, 422, 501, 502, 503),
        summary="Score the stored features of one transaction id",
    )
    async def score_by_id(request: Request) -> Response:
        explain = explain_options(request)
        store = online_store(request)
        body = await read_body(request, SINGLE_BODY_LIMIT)
        require_json(request.headers)
        transaction_id = strict(ByIdRequest, body).transaction_id
        scorer = current_scorer(request)
        require_explainable(scorer, explain)  # before the lookup: Redis down or not, it is a 422
        fetched = await _fetch(store, [transaction_id])
        status = fetched.statuses[0]
        if status == "not_found":
            raise UnknownTransaction
        if status == "invalid":
            raise InvalidFeatureRecord
        (result,) = await _scored(request, scorer, fetched, explain, batch=False)
        return json_response(
            {"transaction-id": transaction_id, **result, "model-version": scorer.version}
        )

    @router.post(
        "/fraud-score/by-id/batch",
        response_model=ByIdBatchResponse,
        response_model_exclude_none=True,
        openapi_extra=json_body(batch_request, explain_parameters()),
        responses=service_errors(413, 422, 501, 503),
        summary=f"Score the stored features of 1 to {settings.max_batch_size} transaction ids",
    )
    async def score_by_id_batch(request: Request) -> Response:
        explain = explain_options(request)
        store = online_store(request)
        body = await read_body(request, batch_limit)
        require_json(request.headers)
        ids: list[str] = strict(batch_request, body).transaction_ids
        scorer = current_scorer(request)
        require_explainable(scorer, explain)
        fetched = await _fetch(store, ids)
        scored = iter(await _scored(request, scorer, fetched, explain, batch=True))
        version = scorer.version
        results = [
            {
                "transaction-id": transaction_id,
                "status": "scored",
                **next(scored),
                "model-version": version,
            }
            if status == "found"
            else {"transaction-id": transaction_id, "status": _NOT_SCORED[status]}
            for transaction_id, status in zip(ids, fetched.statuses, strict=True)
        ]
        metrics.BATCH_SIZE.observe(len(ids))
        request.state.transactions = len(ids)
        return json_response({"model-version": version, "results": results})

    return router


def request_models(settings: Settings) -> list[type[BaseModel]]:
    """The request bodies these routes parse themselves, for the OpenAPI components."""
    return [ByIdRequest, by_id_batch_request_model(settings.max_batch_size)]
