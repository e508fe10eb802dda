"""POST /v1/fraud-score/by-id and /by-id/batch: score the features the online store holds."""

from collections.abc import Sequence

import orjson
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
from app.api.results import result_dicts, result_objects
from app.api.scoring import SINGLE_BODY_LIMIT, json_body, service_errors
from app.config import Settings
from app.errors import (
    JSON,
    FeatureStoreNotConfigured,
    FeatureStoreUnavailable,
    InvalidFeatureRecord,
    UnknownTransaction,
    json_response,
)
from app.featurestore.online import FOUND, INVALID, NOT_FOUND, Fetched, OnlineStore
from app.featurestore.online import FeatureStoreUnavailable as StoreDown
from app.model import Scorer
from app.parsing import require_json, strict
from app.schemas import ByIdBatchResponse, ByIdRequest, ByIdResponse, by_id_batch_request_model

# An id is at most 128 characters: 160 bytes a quoted id, with separators.
BYTES_PER_ID = 160
_NOT_SCORED = {NOT_FOUND: b'"not_found"', INVALID: b'"invalid_record"'}  # the answer's status


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


async def _scored_objects(
    request: Request, scorer: Scorer, fetched: Fetched, explain: Explain
) -> list[bytes]:
    """The found records' result objects, in request order (none found: nothing to score)."""
    if not len(fetched.matrix):
        return []
    scores = await score(request, scorer, fetched.matrix, explain, batch=True)
    return result_objects(scores, explain)


def by_id_batch_body(
    ids: Sequence[str], statuses: Sequence[str], scored: list[bytes], model_version: str
) -> bytes:
    """The by-id batch answer: per id, in request order, its status, and when it was found its
    result (the next of `scored`, the found ids' result objects in order) and the model version."""
    version = orjson.dumps(model_version)
    results = iter(scored)
    joined = b",".join(
        [
            b'{"transaction-id":%b,"status":"scored",%b,"model-version":%b}'
            % (orjson.dumps(transaction_id), next(results)[1:-1], version)
            if status == FOUND
            else b'{"transaction-id":%b,"status":%b}'
            % (orjson.dumps(transaction_id), _NOT_SCORED[status])
            for transaction_id, status in zip(ids, statuses, strict=True)
        ]
    )
    return b'{"model-version":%b,"results":[%b]}' % (version, joined)


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
        if status == NOT_FOUND:
            raise UnknownTransaction
        if status == INVALID:
            raise InvalidFeatureRecord
        scores = await score(request, scorer, fetched.matrix, explain, batch=False)
        (result,) = result_dicts(scores, explain)
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
        scored = await _scored_objects(request, scorer, fetched, explain)
        metrics.BATCH_SIZE.observe(len(ids))
        request.state.transactions = len(ids)
        body = by_id_batch_body(ids, fetched.statuses, scored, scorer.version)
        return Response(body, media_type=JSON)

    return router


def request_models(settings: Settings) -> list[type[BaseModel]]:
    """The request bodies these routes parse themselves, for the OpenAPI components."""
    return [ByIdRequest, by_id_batch_request_model(settings.max_batch_size)]
