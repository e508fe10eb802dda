"""Schemathesis against the app's own /openapi.json, in process: no 5xx, responses as documented."""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi
from starlette.types import Receive, Scope, Send

from app.config import Settings
from app.features import DEFAULT_STORE_PREFIX, record_fields, transaction_key
from app.main import create_app
from app.synthetic import generate
from tests.conftest import API_KEY
from tests.redis_server import RedisServer, requires_redis, start_redis

pytestmark = requires_redis  # the by-id operations need their store

MAX_EXAMPLES = 50  # per operation, fuzzing phase; the examples and coverage phases add a few more

examples_run: Counter[str] = Counter()


def service_settings(model_path: Path, feature_store_uri: str = "") -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        api_key=API_KEY,
        model_path=model_path,
        rate_limit="1000000/minute",
        feature_store_uri=feature_store_uri,
        feature_store_timeout_ms=1000,
    )


class AppUnderTest:
    """The ASGI app schemathesis calls: forwards to the app the module fixture builds.

    The schema must exist at collection, the session's model only once fixtures run.
    """

    app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "the scoring_app fixture sets the app before any call"
        await self.app(scope, receive, send)


app_under_test = AppUnderTest()


def load_schema() -> Any:
    """The document the app serves at /openapi.json (it depends on settings, not on the model).

    Loaded at import, because schemathesis's pytest integration parametrizes at collection; its
    lazy `from_fixture` loader relies on a pytest internal (`Node._nodeid`) that pytest 9 removed.
    """
    app = create_app(service_settings(Path("unused-for-the-schema.joblib")))
    document = TestClient(app).get("/openapi.json").raise_for_status().json()
    config = schemathesis.Config.from_dict(
        {
            # Every case carries a valid key, so generated bodies reach validation and the
            # model; the `ignored_auth` check still sends requests without it (expects 403).
            "headers": {"X-API-Key": API_KEY},
            "generation": {"max-examples": MAX_EXAMPLES},
            "seed": 20260101,
            "operations": [
                {
                    # An OIP tensor's shape must match its data's length, a relation JSON Schema
                    # cannot state: a schema-valid infer request may rightly be a 400.
                    "include-path-regex": "^/v2/.*/infer$",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "400", "401", "403", "404", "429"]
                        }
                    },
                }
            ],
        }
    )
    loaded = schemathesis.openapi.from_dict(document, config=config)
    # With an app, every request goes through the ASGI transport, the checks' probes included.
    loaded.app = app_under_test
    return loaded


schema = load_schema()


@pytest.fixture(scope="module")
def feature_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis holding the id of the schema's example, so by-id cases reach a 200 too."""
    redis_server = start_redis(tmp_path_factory.mktemp("schemathesis-redis"))
    client = redis_server.client()
    values = generate(rows=1, seed=3)[0][0].tolist()
    client.hset(
        transaction_key(DEFAULT_STORE_PREFIX, "txn-000042"), mapping=record_fields(values, 0)
    )
    client.close()
    try:
        yield redis_server
    finally:
        redis_server.stop()


@pytest.fixture(scope="module")
def scoring_app(model_path: Path, feature_store: RedisServer) -> Iterator[FastAPI]:
    """The app under test, with the session's model (schemathesis runs its lifespan once)."""
    app_under_test.app = create_app(service_settings(model_path, feature_store.uri))
    yield app_under_test.app
    asgi.shutdown_lifespans()  # the app's lifespan ends here, not at interpreter exit
    app_under_test.app = None
    by_operation = ", ".join(f"{label}: {count}" for label, count in sorted(examples_run.items()))
    print(f"\nschemathesis: {sum(examples_run.values())} examples ({by_operation})")


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: schemathesis.Case, scoring_app: FastAPI) -> None:
    assert scoring_app.state.settings.model_path.is_file()
    response = case.call_and_validate()
    assert response.status_code < 500
    examples_run[f"{case.operation.label} {response.status_code}"] += 1
