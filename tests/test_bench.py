"""`python -m bench --smoke` end to end: it runs, prints the table, writes the JSON (no timings)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = {"single-c1", "single-c20", "batch"}
EVERY = ORIGINAL | {
    "explain-c20", "explain-batch", "v2-json-c20", "v2-binary",
    *(() if shutil.which("redis-server") is None else ("by-id-c1", "by-id-c20", "by-id-batch")),
}  # fmt: skip
CONFIG_ENGINES = {"sklearn": "sklearn", "default": "onnx"}
SCENARIOS = {"sklearn": ORIGINAL, "default": EVERY}  # what each smoke configuration measures

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
        for scenario in SCENARIOS[config]:
            assert (config, scenario) in table_rows
    assert "ratios (default/sklearn on medians; the others within each round):" in stdout
    assert "one ONNX session in-process" in stdout
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
    assert set(results["options"]["scenarios"]) >= EVERY
    (alone,) = results["inprocess_onnx"]
    assert alone["rows_per_s"] > 0


def test_each_run_measured_every_scenario_on_the_expected_engine(smoke: tuple[str, dict]) -> None:
    _, results = smoke
    assert {run["config"] for run in results["runs"]} == set(CONFIG_ENGINES)
    for run in results["runs"]:
        assert run["engines_loaded"] == [CONFIG_ENGINES[run["config"]]] * 2
        assert len(run["worker_pids"]) == 2
        assert run["workers_restarted"] is False
        assert set(run["scenarios"]) == SCENARIOS[run["config"]]
        # A lookup over the loaded machine's budget is a 503, by design: the smoke run's
        # FEATURE_STORE_TIMEOUT_MS is the default 50 ms. Every other request is a 200.
        assert set(run["server_log"]["statuses"]) <= {"200", "503"}
        assert run["server_log"]["statuses"]["200"] > 0
        for name, scenario in run["scenarios"].items():
            assert scenario["requests"] > 0
            if not name.startswith("by-id"):
                assert scenario["errors"]["status"] == 0  # no 4xx/5xx answers
            assert {"p50", "p99"} <= set(scenario["latency_ms"])
            assert scenario["cpu_ms_per_request"] >= 0
            assert len(scenario["rss_mib_by_worker"]) == 2
            assert len(scenario["connections_by_worker"]) == 2


def test_summary_ratios_and_targets_have_their_shape(smoke: tuple[str, dict]) -> None:
    _, results = smoke
    for config in CONFIG_ENGINES:
        for scenario in SCENARIOS[config]:
            for metric in ("rate", "p50_ms", "p99_ms", "cpu_ms_per_request", "rss_mib_per_worker"):
                stats = results["summary"][config][scenario][metric]
                assert stats["min"] <= stats["median"] <= stats["max"]
    assert {"req_per_s_c20", "p99_c20", "p50_c1", "batch_rows_per_s", "rss_mib_per_worker",
            "explain_c20_req_per_s", "explain_batch_rows_per_s", "v2_json_c20_req_per_s"} <= set(
        results["ratios"]
    )  # fmt: skip
    measured = {name for name, value in results["ratios"].items() if value is not None}
    # the smoke run has neither no-reasons nor stock-http: their ratios are not measured
    assert not measured & {"plain_c20_vs_no_reasons", "plain_c20_vs_stock_http"}
    assert {
        "explain_c20_req_per_s",
        "explain_batch_rows_per_s",
        "v2_json_c20_req_per_s",
    } <= measured
    issues = {target["issue"] for target in results["targets"]}
    assert issues == {"engine", "feature store", "reason codes", "edges", "OIP"}
    for target in results["targets"]:
        assert (target["holds"] is None) == (target["value"] is None)
    assert set(results["balance"]) == set(CONFIG_ENGINES)
