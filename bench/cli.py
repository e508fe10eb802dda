"""Options, the model to measure, the rounds, and the table and JSON they produce."""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import bodies, loadgen, machine, report, server
from bench.configs import CONFIGS, DEFAULT_CONFIGS, SMOKE_CONFIGS
from bench.runner import BATCH, SINGLE, Plan, Scenario, run_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "model" / "fraud-model.joblib"
RESULTS = REPO / "bench" / "results"
BATCH_ROWS = 1000  # the service's default MAX_BATCH_SIZE
# Enough connections that, with a socket per worker, both workers almost surely get some (127 in
# 128): rows/s then measures capacity; the latencies include waiting behind the other batches.
BATCH_CONNECTIONS = 8
SMOKE_TRAINING = ("--rows", "5000", "--trees", "10")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--duration", type=int, help="seconds per measurement (10; smoke 1)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per server (3; smoke 1)")
    parser.add_argument(
        "--rounds", type=int, help="rounds, configurations alternating (3; smoke 1)"
    )
    parser.add_argument("--model", type=Path, help=f"joblib artifact (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--configs",
        help=f"comma-separated, of {', '.join(CONFIGS)} (default {','.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument("--out", type=Path, help="results directory (default bench/results)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, a tiny model")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = parser.parse_args(argv)
    for option, usual, smoke in (("duration", 10, 1), ("warmup", 3, 1), ("rounds", 3, 1)):
        if getattr(args, option) is None:
            setattr(args, option, smoke if args.smoke else usual)
    default_configs = SMOKE_CONFIGS if args.smoke else DEFAULT_CONFIGS
    names = args.configs.split(",") if args.configs else default_configs
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown --configs {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    args.configs = list(dict.fromkeys(names))
    if min(args.duration, args.warmup, args.rounds) < 1:
        parser.error("--duration, --warmup and --rounds must be at least 1")
    return args


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A KeyboardInterrupt unwinds through every try/finally, so each server is stopped.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        loadgen.wrk_binary()
    except loadgen.WrkMissing as error:
        print(error, file=sys.stderr)
        return 3
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        return _run(args, work)
    except KeyboardInterrupt:
        print("interrupted: servers stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep_logs:
            print(f"server logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _model(args: argparse.Namespace, work: Path) -> Path:
    """The artifact to measure, trained first when it does not exist yet."""
    extra: tuple[str, ...]
    if args.model is None and args.smoke:
        path, extra = work / "model" / "fraud-model.joblib", SMOKE_TRAINING
    else:
        path, extra = (args.model or DEFAULT_MODEL).resolve(), ()
    if not path.is_file():
        print(f"training {path} (python -m app.train {' '.join(extra)})", flush=True)
        command = [sys.executable, "-m", "app.train", "--out", str(path), *extra]
        subprocess.run(command, cwd=REPO, check=True, timeout=1800)
    return path


def _run(args: argparse.Namespace, work: Path) -> int:
    started, clock, load_start = datetime.now(UTC), time.monotonic(), os.getloadavg()
    model = _model(args, work)
    single_body, batch_body = bodies.write(work, BATCH_ROWS)
    scenarios = (
        Scenario(report.C1, SINGLE, single_body, 1, 1),
        Scenario(report.C20, SINGLE, single_body, 20, 1),
        Scenario(report.BATCH, BATCH, batch_body, BATCH_CONNECTIONS, BATCH_ROWS),
    )
    plan = Plan(model, scenarios, args.duration, args.warmup, single_body, batch_body, BATCH_ROWS)
    configs = [CONFIGS[name] for name in args.configs]
    missing = [c.name for c in configs if not c.model_path(model).is_file()]
    if missing:
        print(f"skipping {', '.join(missing)}: no {model.with_suffix('.onnx').name}", flush=True)
        configs = [c for c in configs if c.name not in missing]
    if not configs:
        print("nothing to measure", file=sys.stderr)
        return 1

    runs, failures = [], []
    for round_number in range(1, args.rounds + 1):
        # Rotate the order each round so no configuration always runs first (or after another).
        shift = (round_number - 1) % len(configs)
        for config in configs[shift:] + configs[:shift]:
            print(f"round {round_number}/{args.rounds}: {config.name} ({config.about})", flush=True)
            run_dir = work / f"r{round_number}-{config.name}"
            run_dir.mkdir()
            try:
                runs.append(run_config(plan, config, round_number, run_dir))
            except (server.ServerError, RuntimeError) as error:
                print(f"  FAILED: {error}", file=sys.stderr, flush=True)
                failures.append({"config": config.name, "round": round_number, "error": str(error)})

    results = _results(args, plan, model, runs, failures, started)
    results["elapsed_s"] = round(time.monotonic() - clock, 1)
    results["machine"]["loadavg_start"] = list(load_start)
    print()
    print(_text(results, scenarios))
    out_dir = args.out or (
        Path(tempfile.mkdtemp(prefix="bench-results-")) if args.smoke else RESULTS
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {path}")
    return 1 if failures or not runs else 0


def _results(
    args: argparse.Namespace,
    plan: Plan,
    model: Path,
    runs: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    started: datetime,
) -> dict[str, Any]:
    summary = report.summarize(runs)
    ratio = report.ratios(summary)
    return {
        "schema": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "options": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "configs": list(args.configs),
            "batch_rows": plan.batch_rows,
            "scenarios": {
                s.name: {"path": s.path, "connections": s.connections} for s in plan.scenarios
            },
            "wrk_threads": 1,
        },
        "machine": machine.machine_info(),
        "model": machine.model_info(model),
        "runs": runs,
        "failures": failures,
        "summary": summary,
        "ratios": ratio,
        "targets": report.targets(summary, ratio),
        "balance": report.balance(runs),
    }


def _text(results: dict[str, Any], scenarios: tuple[Scenario, ...]) -> str:
    connections = {scenario.name: scenario.connections for scenario in scenarios}
    parts = [
        "cells: median (min..max) over rounds; rate: req/s, or rows/s for batch\n"
        "kernel: system share of the server's CPU; failed: socket errors and 4xx/5xx, all rounds\n"
        "other load: cores busy with neither the server nor wrk (noise from other work)",
        report.table(results["summary"], connections),
        "",
        report.ratios_text(results["ratios"], results["targets"]),
        "",
        report.balance_text(results["balance"]),
    ]
    statuses = [
        f"{run['config']} r{run['round']}: {run['server_log']['statuses']}"
        for run in results["runs"]
    ]
    problems = [
        f"{run['config']} r{run['round']}: {run['server_log']['examples']}"
        for run in results["runs"]
        if run["server_log"]["problems"]
    ]
    parts += ["", "statuses the servers logged: " + "; ".join(statuses)]
    if problems:
        parts.append("server warnings/errors: " + "; ".join(problems))
    for failure in results["failures"]:
        parts.append(
            f"FAILED {failure['config']} round {failure['round']}: {failure['error'][:300]}"
        )
    return "\n".join(parts)
