"""Shared fixtures: a small forest trained once per session, settings and an in-process client."""

import csv
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.conversion import CONVERSION_DIR_ENV, convert_for_workers
from app.main import create_app
from app.synthetic import generate
from app.train import train_and_write

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CSV = ROOT.parent / "shared" / "data" / "creditcard-sample.csv"
# The sample lives beside the project, not in it (nor in the image's test stage).
needs_sample = pytest.mark.skipif(not SAMPLE_CSV.is_file(), reason=f"{SAMPLE_CSV} is not present")
API_KEY = "test-key-4f1c2a9e7b3d5f60"
ROTATION_KEY = "rotation-key-8e2b6d4a1c9f7e35"
HEADERS = {"X-API-Key": API_KEY}


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A CSV of `header` then `rows`, as a pipeline or a spreadsheet would write it."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-tree forest on 30,000 generated rows, exported as joblib + ONNX + card."""
    directory = tmp_path_factory.mktemp("model")
    features, labels = generate(rows=30_000, seed=7, fraud_rate=0.01)
    train_and_write(
        features, labels, directory / "fraud-model.joblib", data={"source": "generated"}, trees=20
    )
    return directory


@pytest.fixture(scope="session")
def model_path(model_dir: Path) -> Path:
    return model_dir / "fraud-model.joblib"


@pytest.fixture(scope="session")
def onnx_model_path(model_dir: Path) -> Path:
    """The same forest as training exported it to ONNX: a service started on it has nothing to
    convert, 3 s less CPU a start, for the process tests whose subject is not the artifact."""
    return model_dir / "fraud-model.onnx"


@pytest.fixture(scope="session")
def converted_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session model's conversion to ONNX, made once as the start command makes it."""
    directory = tmp_path_factory.mktemp("conversion")
    convert_for_workers(model_path, "", directory)
    return directory


@pytest.fixture
def like_a_worker(converted_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process apps load the session model as a worker of `python -m app` does, from the
    start command's conversion, instead of converting it again: 0.3 s less per client, which
    is most of the in-process suite's time. Other artifacts are still converted on load."""
    monkeypatch.setenv(CONVERSION_DIR_ENV, str(converted_model))


@pytest.fixture(scope="session")
def mock_body() -> dict[str, float]:
    return json.loads((ROOT / "model" / "mock-request-body.json").read_text())


@pytest.fixture
def make_settings(model_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "api_key": API_KEY,
            "api_keys": ROTATION_KEY,
            "model_path": model_path,
            "rate_limit": "1000000/minute",
        }
        return Settings(_env_file=None, **{**values, **overrides})  # type: ignore[call-arg]

    return factory


@contextmanager
def running_client(settings: Settings) -> Iterator[TestClient]:
    """The app with its lifespan run (model loaded), as a client on the in-process transport."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client(make_settings: Callable[..., Settings], like_a_worker: None) -> Iterator[TestClient]:
    with running_client(make_settings()) as test_client:
        yield test_client


@pytest.fixture
def client_factory(
    make_settings: Callable[..., Settings], like_a_worker: None
) -> Iterator[Callable[..., TestClient]]:
    """Clients with other settings; each is closed (lifespan ended) at teardown."""
    opened: list[Any] = []

    def factory(**overrides: Any) -> TestClient:
        manager = running_client(make_settings(**overrides))
        opened.append(manager)
        return manager.__enter__()

    yield factory
    for manager in reversed(opened):
        manager.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real redis-server for one test module (tests.redis_server skips when there is none)."""
    from tests.redis_server import start_redis

    running = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield running
    finally:
        running.stop()
