"""The Open Inference Protocol (KServe V2) under /v2: OIP ↔ the Scorer the /v1 routes call."""

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from app import content_coding, metrics
from app.api.deps import current_scorer, enforce_rate_limit, read_body
from app.api.inference import NO_EXPLAIN, Explain, score
from app.api.ops import answer_head_too
from app.api.scoring import batch_body_limit
from app.config import Settings
from app.errors import JSON, OIP_PREFIX, BodyTooLarge, ServiceError, json_response
from app.features import FEATURE_NAMES, N_FEATURES
from app.model import Scorer
from app.oip import (
    BINARY_EXTENSION,
    CONTRIBUTIONS,
    HEADER_LENGTH,
    INPUT_NAME,
    MODEL_NAME,
    OUTPUTS,
    TensorError,
    encode_infer,
    header_length_of,
    parse_infer,
)
from app.oip_schemas import (
    InferResponse,
    Liveness,
    ModelMetadata,
    OipError,
    Readiness,
    ServerMetadata,
    infer_request_model,
)

SERVER_NAME = "fraud-scoring-service"
TAG = "open inference protocol"
BINARY = "application/octet-stream"
_CONTRIBUTIONS = Explain(enabled=True, max_reasons=N_FEATURES)
_PLATFORMS = {"onnx": "onnxruntime_onnx", "sklearn": "scikit-learn"}


class InvalidTensor(ServiceError):
    status_code = 400
    error = "invalid_tensor"


class UnknownModel(ServiceError):
    status_code = 404
    error = "unknown_model"


def _model_paths(settings: Settings, suffix: str) -> list[tuple[str, dict[str, Any]]]:
    """A model route's two paths, plain and `/versions/{v}`, each with its OpenAPI parameters.

    The path parameters are read from `request.path_params`, not declared as arguments: FastAPI's
    per-request handling of declared ones was 6 % of the calls of a one-row infer, for two strings
    that _check_model compares anyway. They are documented as the one value each may take.
    """

    def parameter(name: str, value: str) -> dict[str, Any]:
        schema = {"type": "string", "enum": [value]}
        return {"name": name, "in": "path", "required": True, "schema": schema}

    name = parameter("model_name", MODEL_NAME)
    version = parameter("model_version", settings.model_version)
    return [
        (f"/models/{{model_name}}{suffix}", {"parameters": [name]}),
        (
            f"/models/{{model_name}}/versions/{{model_version}}{suffix}",
            {"parameters": [name, version]},
        ),
    ]


def _errors(*statuses: int | str) -> dict[int | str, dict[str, Any]]:
    # "4XX" also keeps FastAPI from documenting its 422: under /v2 a bad request is OIP's 400.
    return {status: {"model": OipError} for status in statuses}


def _check_model(settings: Settings, request: Request) -> None:
    """404 unless the path names the served model (and, when it names one, its version)."""
    # The names are not echoed: a path is the client's text, and the answer need not repeat it.
    if request.path_params["model_name"] != MODEL_NAME:
        raise UnknownModel(f"unknown model: this server serves '{MODEL_NAME}'")
    version = request.path_params.get("model_version")
    if version is not None and version != settings.model_version:
        raise UnknownModel(
            f"unknown version of model '{MODEL_NAME}': it serves {settings.model_version}"
        )


def _readiness(request: Request) -> Response:
    if request.app.state.scorer is None:
        return json_response({"ready": False}, 503)
    return json_response({"ready": True})


def model_metadata(scorer: Scorer) -> dict[str, Any]:
    """What a client needs to call the model; `contributions` only when the model carries them."""
    outputs = [
        {"name": name, "datatype": spec.datatype, "shape": spec.shape}
        for name, spec in OUTPUTS.items()
        if name != CONTRIBUTIONS or scorer.explains
    ]
    return {
        "name": MODEL_NAME,
        "versions": [scorer.version],
        "platform": _PLATFORMS.get(scorer.engine.name, scorer.engine.name),
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, N_FEATURES]}],
        "outputs": outputs,
        # OIP parameters are scalars: the column order as one comma-separated string.
        "parameters": {
            "features": ",".join(FEATURE_NAMES),
            "input_datatypes": "FP32,FP64",
            "threshold": scorer.threshold,
        },
    }


def _open_routes(settings: Settings) -> APIRouter:
    router = APIRouter(prefix=OIP_PREFIX, tags=[TAG], responses=_errors("4XX"))

    @router.get("/health/live", response_model=Liveness, summary="OIP liveness")
    async def server_live() -> Response:
        return json_response({"live": True})

    @router.get(
        "/health/ready",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
        summary="OIP readiness: a model is loaded",
    )
    async def server_ready(request: Request) -> Response:
        return _readiness(request)

    answer_head_too(router, ("/health/live", server_live), ("/health/ready", server_ready))

    @router.get("", response_model=ServerMetadata, summary="OIP server metadata")
    async def server_metadata() -> Response:
        return json_response(
            {
                "name": SERVER_NAME,
                "version": settings.app_version,
                "extensions": [BINARY_EXTENSION],
            }
        )

    async def model_ready(request: Request) -> Response:
        _check_model(settings, request)
        return _readiness(request)

    for path, parameters in _model_paths(settings, "/ready"):
        router.add_api_route(
            path,
            model_ready,
            response_model=Readiness,
            responses={503: {"model": Readiness}, **_errors(404)},
            summary="OIP model readiness",
            openapi_extra=parameters,
        )
    return router


def _protected_routes(settings: Settings) -> APIRouter:
    router = APIRouter(
        prefix=OIP_PREFIX,
        tags=[TAG],
        dependencies=[Depends(enforce_rate_limit)],
        responses=_errors(403, 429, "4XX"),
    )
    body_limit = batch_body_limit(settings.max_batch_size)
    request_model = infer_request_model(settings.max_batch_size)
    request_body = {
        "required": True,
        "description": "JSON, or (binary tensor data extension) a JSON header of "
        f"{HEADER_LENGTH} bytes followed by the input's little-endian values",
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{request_model.__name__}"}}},
    }
    binary_answer = {
        "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            HEADER_LENGTH: {
                "description": "with binary outputs: the JSON header's length in bytes",
                "schema": {"type": "integer"},
            }
        },
    }

    async def infer(request: Request) -> Response:
        _check_model(settings, request)
        body = _decoded(request, await read_body(request, body_limit), body_limit)
        try:
            json_length = header_length_of(request.headers.getlist(HEADER_LENGTH))
            parsed = parse_infer(body, json_length, settings.max_batch_size)
        except TensorError as error:
            raise InvalidTensor(str(error)) from None
        scorer = current_scorer(request)
        explain = NO_EXPLAIN
        if parsed.wants_contributions:
            if not scorer.explains:
                raise InvalidTensor(
                    f"output '{CONTRIBUTIONS}' is not available: the served model carries no "
                    "reason codes"
                )
            explain = _CONTRIBUTIONS
        scores = await score(request, scorer, parsed.matrix, explain, batch=True)
        metrics.BATCH_SIZE.observe(len(scores))
        content, header_length = encode_infer(parsed, scores, scorer.version)
        if header_length is None:
            return Response(content, media_type=JSON)
        return Response(content, media_type=BINARY, headers={HEADER_LENGTH: str(header_length)})

    async def metadata(request: Request) -> Response:
        _check_model(settings, request)
        return json_response(model_metadata(current_scorer(request)))

    for path, parameters in _model_paths(settings, "/infer"):
        router.add_api_route(
            path,
            infer,
            methods=["POST"],
            response_model=InferResponse,
            responses={200: binary_answer, **_errors(400, 404, 413, 503)},
            summary="OIP inference",
            openapi_extra={**parameters, "requestBody": request_body},
        )
    for path, parameters in _model_paths(settings, ""):
        router.add_api_route(
            path,
            metadata,
            response_model=ModelMetadata,
            responses=_errors(404, 503),
            summary="OIP model metadata",
            openapi_extra=parameters,
        )
    return router


def _decoded(request: Request, body: bytes, limit: int) -> bytes:
    """The body without its Content-Encoding (gzip or deflate: tritonclient's
    request_compression_algorithm), within the same limit as an uncompressed one."""
    try:
        return content_coding.decoded(body, request.headers.getlist("content-encoding"), limit)
    except content_coding.UnsupportedCoding as error:
        raise InvalidTensor(str(error), {"Accept-Encoding": content_coding.ACCEPTED}) from None
    except content_coding.CorruptBody as error:
        raise InvalidTensor(str(error)) from None
    except content_coding.InflatedTooLarge as error:
        raise BodyTooLarge(str(error)) from None


def build_routers(settings: Settings) -> tuple[APIRouter, APIRouter]:
    """The /v2 routes: health and server metadata open; the model's metadata and infer keyed.

    Two routers for the app to include, not one that includes both: FastAPI matches a nested
    router level by level: 12 % more function calls per one-row infer.
    """
    return _protected_routes(settings), _open_routes(settings)


def request_models(settings: Settings) -> list[type[BaseModel]]:
    """The request bodies these routes parse themselves, for the OpenAPI components."""
    return [infer_request_model(settings.max_batch_size)]
