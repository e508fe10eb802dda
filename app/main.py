"""create_app(settings): lifespan, routers, handlers and middleware; `app` for uvicorn."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app import metrics
from app.api import byid, oip, ops, scoring
from app.config import Settings, get_settings_or_exit
from app.errors import install_error_handlers
from app.featurestore.online import OnlineStore
from app.logs import configure_unless_configured
from app.middleware import RequestContextMiddleware
from app.model import ModelLoadError, Scorer, load_model
from app.ratelimit import RateLimiter
from app.security import KeyRing

log = logging.getLogger("app.main")


def load_scorer(settings: Settings) -> Scorer | None:
    """The configured model, or None (logged once, counted) when it cannot be served."""
    try:
        scorer = load_model(
            settings.model_path,
            engine=settings.model_engine,
            expected_sha256=settings.model_sha256,
            version=settings.model_version,
            threshold=settings.fraud_threshold,
        )
    except ModelLoadError as error:
        log.error("model not loaded: %s", error, extra={"model_path": str(settings.model_path)})
        metrics.MODEL_LOAD_FAILURES.inc()
        metrics.model_state(None, None, None)
        return None
    log.info(
        "model loaded",
        extra={
            "engine": scorer.engine.name,
            "model_version": scorer.version,
            "artifact_sha256": scorer.sha256,
            "model_path": str(settings.model_path),
        },
    )
    metrics.model_state(scorer.version, scorer.engine.name, scorer.card.get("holdout_scores"))
    return scorer


async def open_feature_store(settings: Settings) -> OnlineStore | None:
    """The worker's online store client (None: FEATURE_STORE_URI empty, by-id routes 501).

    Its start only reads the meta record, within the lookup budget: Redis being down never
    delays or fails a worker's start, and neither /health nor the raw routes depend on it.
    """
    if not settings.feature_store_uri:
        return None
    store = OnlineStore(
        settings.feature_store_uri,
        settings.feature_store_prefix,
        settings.feature_store_timeout_ms,
    )
    await store.start()
    return store


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    metrics.worker_started()
    settings: Settings = app.state.settings
    app.state.scorer = load_scorer(settings)
    app.state.feature_store = await open_feature_store(settings)
    # The model's objects live as long as the worker: freezing them keeps the collector's full
    # passes short, which is where the tail latency went in the prototype (PERF-NOTES).
    gc.collect()
    gc.freeze()
    # The lifespan state reaches the HTTP protocol too, whose refusals log paths (app.protocol).
    yield {"key_ring": app.state.key_ring}
    app.state.scorer = None
    if app.state.feature_store is not None:
        await app.state.feature_store.close()
        app.state.feature_store = None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings_or_exit()
    app = FastAPI(
        title="Fraud scoring service",
        summary="Scores card transactions for fraud, 0 to 100.",
        version=settings.app_version,
        lifespan=lifespan,
        # A path with a trailing slash is unknown (404), not a 307 to a URL built from the
        # client's Host header with the scheme this process sees (http behind a TLS balancer).
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.scorer = None
    app.state.feature_store = None
    app.state.key_ring = KeyRing(settings.accepted_keys)
    app.state.limiter = RateLimiter(settings.rate_limit, settings.rate_limit_storage_uri)
    install_error_handlers(app)
    app.include_router(scoring.build_router(settings))
    app.include_router(byid.build_router(settings))
    for router in oip.build_routers(settings):
        app.include_router(router)
    app.include_router(ops.router)
    app.add_middleware(RequestContextMiddleware)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


def component_schemas(model: type[BaseModel]) -> dict[str, Any]:
    """A request model's JSON schema and those it nests, as OpenAPI components."""
    model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    nested = model_schema.pop("$defs", {})
    return {**nested, model.__name__: model_schema}


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for router_module in (scoring, byid, oip):
            for model in router_module.request_models(settings):
                components.update(component_schemas(model))
        app.openapi_schema = schema
    return app.openapi_schema


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app on first access, so importing this module (tests,
    # tools) does not need a configured environment.
    if name == "app":
        configure_unless_configured()
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
