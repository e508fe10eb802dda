"""Rounds → min/median/max per configuration and scenario, the ratios, the targets, the table."""

import statistics
from collections.abc import Callable
from typing import Any

from bench.configs import BASELINE, CANDIDATE

C1, C20, BATCH = "single-c1", "single-c20", "batch"

# name → how one scenario result gives the metric
METRICS: dict[str, Callable[[dict[str, Any]], float]] = {
    "rate": lambda r: r["rows_per_s"] if r["rows_per_request"] > 1 else r["req_per_s"],
    "p50_ms": lambda r: r["latency_ms"]["p50"],
    "p99_ms": lambda r: r["latency_ms"]["p99"],
    "cpu_ms_per_request": lambda r: r["cpu_ms_per_request"],
    "rss_mib_per_worker": lambda r: r["rss_mib_per_worker"],
    "kernel_share": lambda r: r.get("cpu_system_share") or 0.0,
    "failed": lambda r: sum(r["errors"].values()),
    "other_cores": lambda r: r.get("other_cores", 0.0),
}


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
        "total": sum(values),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """config → scenario → metric → {min, median, max, n} over the rounds."""
    collected: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        for scenario, result in run["scenarios"].items():
            metrics = collected.setdefault(run["config"], {}).setdefault(scenario, {})
            for name, read in METRICS.items():
                metrics.setdefault(name, []).append(float(read(result)))
    return {
        config: {
            scenario: {name: spread(values) for name, values in metrics.items()}
            for scenario, metrics in scenarios.items()
        }
        for config, scenarios in collected.items()
    }


def _median(summary: dict, config: str, scenario: str, metric: str) -> float | None:
    try:
        return float(summary[config][scenario][metric]["median"])
    except KeyError:
        return None


def _ratio(summary: dict, scenario: str, metric: str) -> float | None:
    candidate = _median(summary, CANDIDATE, scenario, metric)
    baseline = _median(summary, BASELINE, scenario, metric)
    if candidate is None or not baseline:
        return None
    return round(candidate / baseline, 4)


Side = tuple[str, str, str]  # config, scenario, metric


def _read(run_scenarios: dict[str, Any], scenario: str, metric: str) -> float | None:
    result = run_scenarios.get(scenario)
    return None if result is None else float(METRICS[metric](result))


def round_ratios(runs: list[dict[str, Any]], top: Side, bottom: Side) -> list[float]:
    """top / bottom within each round: the two measured minutes apart, on the same machine load."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["config"]] = run["scenarios"]
    ratios = []
    for configs in by_round.values():
        if top[0] not in configs or bottom[0] not in configs:
            continue
        a = _read(configs[top[0]], top[1], top[2])
        b = _read(configs[bottom[0]], bottom[1], bottom[2])
        if a is not None and b:
            ratios.append(a / b)
    return ratios


def _median_ratio(runs: list[dict[str, Any]], top: Side, bottom: Side) -> float | None:
    values = round_ratios(runs, top, bottom)
    return round(statistics.median(values), 4) if values else None


# name → (top, bottom): both measured in the same round
ROUND_RATIOS: dict[str, tuple[Side, Side]] = {
    "by_id_c20_req_per_s": ((CANDIDATE, "by-id-c20", "rate"), (CANDIDATE, "single-c20", "rate")),
    "by_id_c20_p99": ((CANDIDATE, "by-id-c20", "p99_ms"), (CANDIDATE, "single-c20", "p99_ms")),
    "explain_c20_req_per_s": (
        (CANDIDATE, "explain-c20", "rate"),
        (CANDIDATE, "single-c20", "rate"),
    ),
    "explain_batch_rows_per_s": (
        (CANDIDATE, "explain-batch", "rate"),
        (CANDIDATE, "batch", "rate"),
    ),
    "plain_c20_vs_no_reasons": (
        ("plain", "single-c20", "rate"),
        ("no-reasons", "single-c20", "rate"),
    ),
    "plain_batch_vs_no_reasons": (("plain", "batch", "rate"), ("no-reasons", "batch", "rate")),
    "plain_c20_vs_stock_http": (
        ("plain", "single-c20", "rate"),
        ("stock-http", "single-c20", "rate"),
    ),
    "plain_batch_vs_stock_http": (("plain", "batch", "rate"), ("stock-http", "batch", "rate")),
    "v2_json_c20_req_per_s": (
        (CANDIDATE, "v2-json-c20", "rate"),
        (CANDIDATE, "single-c20", "rate"),
    ),
}


def ratio_spreads(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each within-round ratio, round by round: how much of a median is noise."""
    return {
        name: [round(value, 4) for value in round_ratios(runs, top, bottom)]
        for name, (top, bottom) in ROUND_RATIOS.items()
    }


def ratios(summary: dict, runs: list[dict[str, Any]] | None = None) -> dict[str, float | None]:
    """default / sklearn on the medians over rounds; the newer ratios within each round."""
    runs = runs or []
    return {
        "req_per_s_c20": _ratio(summary, C20, "rate"),
        "p99_c20": _ratio(summary, C20, "p99_ms"),
        "p50_c1": _ratio(summary, C1, "p50_ms"),
        "batch_rows_per_s": _ratio(summary, BATCH, "rate"),
        "rss_mib_per_worker": _ratio(summary, BATCH, "rss_mib_per_worker"),
        # within each round: by id ÷ raw and explain ÷ plain and OIP ÷ /v1 on the same server;
        # the plain path with the explain graph ÷ without it, and the bounded protocol ÷ uvicorn's
        **{name: _median_ratio(runs, top, bottom) for name, (top, bottom) in ROUND_RATIOS.items()},
    }


def _p50_gap(runs: list[dict[str, Any]]) -> float | None:
    """by-id p50 minus the raw route's at one connection (ms), median over rounds."""
    gaps = []
    for run in runs:
        if run["config"] == CANDIDATE:
            a = _read(run["scenarios"], "by-id-c1", "p50_ms")
            b = _read(run["scenarios"], C1, "p50_ms")
            if a is not None and b is not None:
                gaps.append(a - b)
    return round(statistics.median(gaps), 4) if gaps else None


def _binary_vs_inprocess(
    runs: list[dict[str, Any]], inprocess: list[dict[str, Any]]
) -> float | None:
    """binary infer rows/s over HTTP ÷ one ONNX session's rows/s in-process, per round."""
    model_alone = {entry["round"]: entry["rows_per_s"] for entry in inprocess}
    values = [
        float(run["scenarios"]["v2-binary"]["rows_per_s"]) / model_alone[run["round"]]
        for run in runs
        if run["config"] == CANDIDATE
        and "v2-binary" in run["scenarios"]
        and model_alone.get(run["round"])
    ]
    return round(statistics.median(values), 4) if values else None


def targets(
    summary: dict,
    ratio: dict[str, float | None],
    runs: list[dict[str, Any]] | None = None,
    inprocess: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The issues' targets, judged on medians over rounds; None where a side was not measured."""
    runs, inprocess = runs or [], inprocess or []

    def check(
        issue: str, name: str, value: float | None, holds: Callable[[float], bool]
    ) -> dict[str, Any]:
        verdict = None if value is None else holds(value)
        return {"issue": issue, "target": name, "value": value, "holds": verdict}

    d = CANDIDATE

    def at_par(value: float) -> bool:  # "unchanged": within the noise of same-round ratios
        return value >= 0.95

    return [
        check("engine", "20 conn req/s >= 12x sklearn", ratio["req_per_s_c20"], lambda v: v >= 12),
        check("engine", "20 conn p99 <= 1/8 of sklearn", ratio["p99_c20"], lambda v: v <= 1 / 8),
        check(
            "engine", "1 conn p50 <= 0.6 ms", _median(summary, d, C1, "p50_ms"), lambda v: v <= 0.6
        ),
        check(
            "engine",
            "batch >= 100,000 rows/s",
            _median(summary, d, BATCH, "rate"),
            lambda v: v >= 100_000,
        ),
        check("engine", "RSS/worker <= sklearn", ratio["rss_mib_per_worker"], lambda v: v <= 1.0),
        check(
            "feature store",
            "by-id 20 conn req/s >= 60% of raw",
            ratio["by_id_c20_req_per_s"],
            lambda v: v >= 0.6,
        ),
        check(
            "feature store",
            "by-id 20 conn p99 <= 2x raw",
            ratio["by_id_c20_p99"],
            lambda v: v <= 2,
        ),
        check(
            "feature store",
            "by-id 1 conn p50 <= raw + 0.3 ms",
            _p50_gap(runs),
            lambda v: v <= 0.3,
        ),
        check(
            "feature store",
            "by-id batch >= 100,000 rows/s",
            _median(summary, d, "by-id-batch", "rate"),
            lambda v: v >= 100_000,
        ),
        check(
            "reason codes",
            "explain 20 conn >= 90% of plain",
            ratio["explain_c20_req_per_s"],
            lambda v: v >= 0.9,
        ),
        check(
            "reason codes",
            "explain batch >= 70% of plain",
            ratio["explain_batch_rows_per_s"],
            lambda v: v >= 0.7,
        ),
        *(
            check(issue, f"plain {label} unchanged (>= 0.95x {reference})", ratio[key], at_par)
            for issue, label, reference, key in (
                ("reason codes", "20 conn", "no reasons", "plain_c20_vs_no_reasons"),
                ("reason codes", "batch", "no reasons", "plain_batch_vs_no_reasons"),
                ("edges", "20 conn", "stock http", "plain_c20_vs_stock_http"),
                ("edges", "batch", "stock http", "plain_batch_vs_stock_http"),
            )
        ),
        check(
            "OIP",
            "binary infer >= 300,000 rows/s",
            _median(summary, d, "v2-binary", "rate"),
            lambda v: v >= 300_000,
        ),
        check(
            "OIP",
            "binary infer >= 1x one session in-process",
            _binary_vs_inprocess(runs, inprocess),
            lambda v: v >= 1.0,
        ),
        check(
            "OIP",
            "JSON batch >= 200,000 rows/s",
            _median(summary, d, BATCH, "rate"),
            lambda v: v >= 200_000,
        ),
        check(
            "OIP",
            "v2 JSON 20 conn >= 80% of /v1",
            ratio["v2_json_c20_req_per_s"],
            lambda v: v >= 0.8,
        ),
    ]


def balance(runs: list[dict[str, Any]], scenario: str = C20) -> dict[str, list[dict[str, Any]]]:
    """Per configuration and round: connections and CPU per worker, and the throughput."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        result = run["scenarios"].get(scenario)
        if result is None:
            continue
        cpu = result["cpu_ms_by_worker"]
        rows.setdefault(run["config"], []).append(
            {
                "round": run["round"],
                "connections_by_worker": result["connections_by_worker"],
                "busiest_worker_cpu_share": round(max(cpu) / sum(cpu), 3) if sum(cpu) else None,
                "req_per_s": result["req_per_s"],
            }
        )
    return rows


# ---- text -------------------------------------------------------------------------------------


def _cell(stats: dict[str, float], digits: int, total: bool = False) -> str:
    def number(value: float) -> str:
        return f"{value:,.{digits}f}"

    if total:
        return number(stats["total"])
    if stats["n"] == 1:
        return number(stats["median"])
    return f"{number(stats['median'])} ({number(stats['min'])}..{number(stats['max'])})"


_COLUMNS = (
    ("req/s | rows/s", "rate", 0),
    ("p50 ms", "p50_ms", 2),
    ("p99 ms", "p99_ms", 2),
    ("CPU ms/req", "cpu_ms_per_request", 3),
    ("kernel", "kernel_share", 2),
    ("RSS MiB/worker", "rss_mib_per_worker", 0),
    ("failed", "failed", 0),
    ("other load", "other_cores", 2),
)


def table(summary: dict, connections: dict[str, int]) -> str:
    """One row per configuration and scenario; cells are median (min..max) over rounds."""
    header = ["config", "scenario", "conns", *(title for title, _, _ in _COLUMNS)]
    lines = [header]
    for config, scenarios in summary.items():
        for scenario, metrics in scenarios.items():
            cells = [_cell(metrics[key], d, key == "failed") for _, key, d in _COLUMNS]
            lines.append([config, scenario, str(connections.get(scenario, "")), *cells])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    rendered.insert(1, "-" * len(rendered[0]))
    return "\n".join(rendered)


def ratios_text(
    ratio: dict[str, float | None],
    checks: list[dict[str, Any]],
    spreads: dict[str, list[float]] | None = None,
) -> str:
    lines = [f"ratios ({CANDIDATE}/{BASELINE} on medians; the others within each round):"]
    for name, value in ratio.items():
        rounds = (spreads or {}).get(name)
        each = f"   rounds: {', '.join(f'{v:.3f}' for v in rounds)}" if rounds else ""
        lines.append(f"  {name:<26} {'n/a' if value is None else f'{value:,.3f}'}{each}")
    lines.append("targets:")
    for check in checks:
        verdict = {True: "HOLDS", False: "MISSED", None: "n/a"}[check["holds"]]
        shown = "n/a" if check["value"] is None else f"{check['value']:,.3f}"
        lines.append(f"  {verdict:<7} {check['issue']:<14} {check['target']:<44} {shown}")
    return "\n".join(lines)


def balance_text(rows: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["connection placement at 20 connections (per worker; busiest worker's CPU share):"]
    for config, rounds in rows.items():
        cells = [
            f"r{row['round']} {'+'.join(map(str, row['connections_by_worker']))}"
            f" ({row['busiest_worker_cpu_share'] or 0:.0%}, {row['req_per_s']:,.0f} req/s)"
            for row in rounds
        ]
        lines.append(f"  {config:<15} " + "   ".join(cells))
    return "\n".join(lines)
