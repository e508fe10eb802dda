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

from bench import bodies, inprocess, loadgen, machine, report, server, store
from bench.configs import CONFIGS, DEFAULT_CONFIGS, SMOKE_CONFIGS, Config
from bench.runner import Plan, Scenario, run_config

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
    parser.add_argument(
        "--slices",
        type=int,
        help="wrk runs each measurement is split into, taken in turn with the configuration's "
        "other scenarios so that compared scenarios see the same moments of the machine (5; "
        "smoke 1)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help="seconds of warm-up per server, 0 for none (3; smoke 0: it measures nothing)",
    )
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
    for option, usual, smoke in (
        ("duration", 10, 1),
        ("slices", 5, 1),
        ("warmup", 3, 0),
        ("rounds", 3, 1),
    ):
        if getattr(args, option) is None:
            setattr(args, option, smoke if args.smoke else usual)
    default_configs = SMOKE_CONFIGS if args.smoke else DEFAULT_CONFIGS
    names = args.configs.split(",") if args.configs else default_configs
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown --configs {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    args.configs = list(dict.fromkeys(names))
    if min(args.duration, args.slices, args.rounds) < 1 or args.warmup < 0:
        parser.error("--duration, --slices and --rounds must be at least 1, --warmup at least 0")
    if args.duration % args.slices:
        parser.error("--duration must be a multiple of --slices (whole seconds per wrk run)")
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


# name → path (with query), body, connections, rows per request
SCENARIOS = {
    "single-c1": ("/v1/fraud-score", "single", 1, 1),
    "single-c20": ("/v1/fraud-score", "single", 20, 1),
    "batch": ("/v1/fraud-score/batch", "batch", BATCH_CONNECTIONS, BATCH_ROWS),
    "explain-c20": ("/v1/fraud-score?explain=true", "single", 20, 1),
    "explain-batch": ("/v1/fraud-score/batch?explain=true", "batch", BATCH_CONNECTIONS, BATCH_ROWS),
    "by-id-c1": ("/v1/fraud-score/by-id", "by-id", 1, 1),
    "by-id-c20": ("/v1/fraud-score/by-id", "by-id", 20, 1),
    "by-id-batch": ("/v1/fraud-score/by-id/batch", "by-id-batch", BATCH_CONNECTIONS, BATCH_ROWS),
    "v2-json-c20": ("/v2/models/fraud/infer", "v2-single", 20, 1),
    "v2-binary": ("/v2/models/fraud/infer", "v2-binary", BATCH_CONNECTIONS, BATCH_ROWS),
}  # fmt: skip


def _without_reasons(model: Path) -> Path:
    """The model's .onnx as training wrote it before reason codes: the classifier alone."""
    from app.card import card_path
    from app.contributions import split

    target = model.with_name(model.stem + "-no-reasons.onnx")
    source = model.with_suffix(".onnx")
    if source.is_file():
        target.write_bytes(split(source.read_bytes()).plain)
        card_path(target).write_bytes(card_path(model).read_bytes())
    return target


def _start_store(work: Path) -> store.RedisServer | None:
    if not store.available():
        print("redis-server not found (apt-get install redis-server): no by-id scenarios")
        return None
    print(f"materializing {bodies.STORE_ROWS:,} rows into a redis-server on loopback", flush=True)
    return store.start(work, bodies.write_store_source(work))


def _run(args: argparse.Namespace, work: Path) -> int:
    started, clock, load_start = datetime.now(UTC), time.monotonic(), os.getloadavg()
    model = _model(args, work)
    _without_reasons(model)
    written = bodies.write(work, BATCH_ROWS)
    scenarios = {
        name: Scenario(name, path, written[body], connections, rows)
        for name, (path, body, connections, rows) in SCENARIOS.items()
    }
    redis_server = _start_store(work)
    try:
        plan = Plan(
            model,
            scenarios,
            args.duration,
            args.warmup,
            BATCH_ROWS,
            redis_server.uri if redis_server else None,
            args.slices,
        )
        return _measure_all(args, plan, work, (started, clock, load_start))
    finally:
        if redis_server is not None:
            redis_server.stop()


def _measure_all(
    args: argparse.Namespace,
    plan: Plan,
    work: Path,
    clocks: tuple[datetime, float, tuple[float, float, float]],
) -> int:
    started, clock, load_start = clocks
    configs: list[Config] = [CONFIGS[name] for name in args.configs]
    missing = [c.name for c in configs if not c.model_path(plan.model).is_file()]
    if missing:
        print(f"skipping {', '.join(missing)}: no such artifact beside the model", flush=True)
        configs = [c for c in configs if c.name not in missing]
    if not configs:
        print("nothing to measure", file=sys.stderr)
        return 1
    onnx = plan.model.with_suffix(".onnx")
    runs, failures, alone = [], [], []
    for round_number in range(1, args.rounds + 1):
        if onnx.is_file():
            # The model by itself, while no server runs: what two workers over HTTP must beat.
            seconds = min(5, args.duration)
            model_alone = inprocess.onnx_rows_per_s(onnx, plan.batch_rows, seconds)
            alone.append({"round": round_number, **model_alone})
            print(
                f"round {round_number}/{args.rounds}: one ONNX session in-process, "
                f"{plan.batch_rows:,}-row batches: {model_alone['rows_per_s']:,.0f} rows/s",
                flush=True,
            )
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

    results = _results(args, plan, runs, failures, started, alone)
    results["elapsed_s"] = round(time.monotonic() - clock, 1)
    results["machine"]["loadavg_start"] = list(load_start)
    print()
    print(_text(results, plan))
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
    runs: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    started: datetime,
    alone: list[dict[str, Any]],
) -> dict[str, Any]:
    summary = report.summarize(runs)
    ratio = report.ratios(summary, runs)
    return {
        "schema": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "options": {
            "duration_s": args.duration,
            "slices": args.slices,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "configs": list(args.configs),
            "batch_rows": plan.batch_rows,
            "scenarios": {
                s.name: {"path": s.path, "connections": s.connections, "rows": s.rows}
                for s in plan.scenarios.values()
            },
            "feature_store": plan.store_uri is not None,
            "wrk_threads": 1,
        },
        "machine": machine.machine_info(),
        "model": machine.model_info(plan.model),
        "inprocess_onnx": alone,
        "runs": runs,
        "failures": failures,
        "summary": summary,
        "ratios": ratio,
        "ratio_rounds": report.ratio_spreads(runs),
        "targets": report.targets(summary, ratio, runs, alone),
        "balance": report.balance(runs),
    }


def _text(results: dict[str, Any], plan: Plan) -> str:
    connections = {scenario.name: scenario.connections for scenario in plan.scenarios.values()}
    parts = [
        "cells: median (min..max) over rounds; rate: req/s, or rows/s for batch\n"
        "kernel: system share of the server's CPU; failed: socket errors and 4xx/5xx, all rounds\n"
        "other load: cores busy with neither the server nor wrk (noise from other work)",
        report.table(results["summary"], connections),
        "",
        "one ONNX session in-process (rows/s, per round): "
        + ", ".join(f"{entry['rows_per_s']:,.0f}" for entry in results["inprocess_onnx"]),
        "",
        report.ratios_text(results["ratios"], results["targets"], results["ratio_rounds"]),
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
