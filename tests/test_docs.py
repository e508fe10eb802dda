"""The README documents what the code does: features, settings and defaults, routes, and a curl."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from app.config import Settings
from app.features import FEATURE_NAMES
from app.main import create_app
from tests.conftest import API_KEY, ROOT
from tests.server import start_server

README = (ROOT / "README.md").read_text()


def table_rows(heading: str) -> dict[str, list[str]]:
    """First-column code name → the row's cells, for the first table under `heading`."""
    section = README.split(heading, 1)[1]
    rows = {}
    for line in section.splitlines():
        if line.startswith("|") and "`" in line.split("|")[1]:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
        elif rows and not line.startswith("|"):
            break
    return rows


def test_every_feature_is_documented_in_order() -> None:
    documented = re.findall(r"`(Time|V\d+|Amount)`", README.split("### A transaction", 1)[1])
    assert [name for name in dict.fromkeys(documented) if name in FEATURE_NAMES] == list(
        FEATURE_NAMES
    )


def test_every_setting_is_documented_with_its_default() -> None:
    rows = table_rows("## Configuration")
    assert set(rows) == {name.upper() for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        if field.is_required():
            assert "required" in rows[name.upper()][1]
            continue
        default = field.default
        shown = rows[name.upper()][1].strip("`")
        expected = {(): "empty", "": "empty"}.get(default, str(default))  # type: ignore[call-overload]
        if isinstance(default, float) and default.is_integer():
            expected = str(int(default))
        assert shown == expected, name


def test_every_route_is_documented() -> None:
    app = create_app(Settings(_env_file=None, api_key=API_KEY))  # type: ignore[call-arg]
    paths = app.openapi()["paths"]
    routes = {f"{method.upper()} {path}" for path, methods in paths.items() for method in methods}
    assert routes == set(table_rows("## API"))


def test_every_status_of_the_contract_is_documented() -> None:
    errors = README.split("### Errors", 1)[1].split("###", 1)[0]
    for status in ("403", "413", "422", "429", "503"):
        assert f"| {status} |" in errors


def readme_curl() -> str:
    block = re.search(
        r"```sh\n(curl -s -X POST http://127\.0\.0\.1:8888/v1/fraud-score \\\n.*?)```", README, re.S
    )
    assert block, "the quick start's curl is missing"
    return block.group(1)


@pytest.mark.process
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_quick_start_curl_works_as_printed(tmp_path: Path, model_path: Path) -> None:
    (tmp_path / "model").mkdir()
    shutil.copy(ROOT / "model" / "mock-request-body.json", tmp_path / "model")
    (tmp_path / ".env").write_text(f"API_KEY={API_KEY}\n")
    server = start_server(tmp_path, MODEL_PATH=model_path)
    try:
        command = readme_curl().replace("http://127.0.0.1:8888", server.url)
        result = subprocess.run(
            ["sh", "-c", command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r'\{"fraud-score":\d+,"is-fraud":(true|false),"ood-warning":(true|false),"model-version":"1\.0\.0"\}',
        result.stdout.strip(),
    )


def test_every_metric_is_documented() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from app import metrics

    names = {
        collector._name  # the family name, without the _total suffix counters add on exposition
        for collector in vars(metrics).values()
        if isinstance(collector, MetricWrapperBase)
    }
    table = README.split("### Metrics", 1)[1].split("###", 1)[0]
    for name in names:
        assert re.search(rf"`{name}(_total)?[{{`]", table), name
