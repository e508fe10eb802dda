"""`python -m bench --smoke` end to end: it runs, prints the table, writes the JSON (no timings)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {"single-c1", "single-c20", "batch"}
CONFIG_ENGINES = {"sklearn": "sklearn", "default": "onnx"}

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not found: apt-get install wrk"),
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench-results")
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    (result_file,) = out.glob("*.json")
    assert f"results written to {result_file}" in run.stdout
    return run.stdout, json.loads(result_file.read_text())


def test_prints_the_table_ratios_and_targets(smoke: tuple[str, dict]) -> None:
    stdout, _ = smoke
    assert "req/s | rows/s" in stdout
    assert "CPU ms/req" in stdout
    assert "RSS MiB/worker" in stdout
    table_rows = {tuple(line.split()[:2]) for line in stdout.splitlines() if line.split()}
    for config in CONFIG_ENGINES:
        for scenario in SCENARIOS:
            assert (config, scenario) in table_rows
    assert "default/sklearn (medians):" in stdout
    assert "targets:" in stdout
    assert "connection placement at 20 connections" in stdout


def test_results_describe_the_machine_and_the_model(smoke: tuple[str, dict]) -> None:
    _, results = smoke
    assert results["schema"] == 1
    assert results["smoke"] is True
    assert results["failures"] == []
    assert {"nproc", "cpu_model", "kernel", "python", "libraries", "wrk"} <= set(results["machine"])
    libraries = results["machine"]["libraries"]
    assert {"scikit-learn", "onnxruntime", "fastapi", "uvicorn"} <= set(libraries)
    assert results["model"]["trees"] == 10
    assert results["model"]["nodes"] > 0
    assert results["options"]["rounds"] == 1
    assert set(results["options"]["scenarios"]) == SCENARIOS


def test_each_run_measured_every_scenario_on_the_expected_engine(smoke: tuple[str, dict]) -> None:
    _, results = smoke
    assert {run["config"] for run in results["runs"]} == set(CONFIG_ENGINES)
    for run in results["runs"]:
        assert run["engines_loaded"] == [CONFIG_ENGINES[run["config"]]] * 2
        assert len(run["worker_pids"]) == 2
        assert run["workers_restarted"] is False
        assert set(run["scenarios"]) == SCENARIOS
        assert set(run["server_log"]["statuses"]) == {"200"}
        for scenario in run["scenarios"].values():
            assert scenario["requests"] > 0
            assert scenario["errors"]["status"] == 0  # no 4xx/5xx answers
            assert {"p50", "p99"} <= set(scenario["latency_ms"])
            assert scenario["cpu_ms_per_request"] >= 0
            assert len(scenario["rss_mib_by_worker"]) == 2
            assert len(scenario["connections_by_worker"]) == 2


def test_summary_ratios_and_targets_have_their_shape(smoke: tuple[str, dict]) -> None:
    _, results = smoke
    for config in CONFIG_ENGINES:
        for scenario in SCENARIOS:
            for metric in ("rate", "p50_ms", "p99_ms", "cpu_ms_per_request", "rss_mib_per_worker"):
                stats = results["summary"][config][scenario][metric]
                assert stats["min"] <= stats["median"] <= stats["max"]
    assert set(results["ratios"]) == {
        "req_per_s_c20",
        "p99_c20",
        "p50_c1",
        "batch_rows_per_s",
        "rss_mib_per_worker",
    }
    assert all(value is not None for value in results["ratios"].values())
    assert len(results["targets"]) == 5
    for target in results["targets"]:
        assert isinstance(target["holds"], bool)
    assert set(results["balance"]) == set(CONFIG_ENGINES)
