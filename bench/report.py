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


def ratios(summary: dict) -> dict[str, float | None]:
    """default / sklearn, on the medians over rounds."""
    return {
        "req_per_s_c20": _ratio(summary, C20, "rate"),
        "p99_c20": _ratio(summary, C20, "p99_ms"),
        "p50_c1": _ratio(summary, C1, "p50_ms"),
        "batch_rows_per_s": _ratio(summary, BATCH, "rate"),
        "rss_mib_per_worker": _ratio(summary, BATCH, "rss_mib_per_worker"),
    }


def targets(summary: dict, ratio: dict[str, float | None]) -> list[dict[str, Any]]:
    """The issue's targets, judged on medians over rounds; None where a side was not measured."""

    def check(name: str, value: float | None, holds: Callable[[float], bool]) -> dict[str, Any]:
        return {"target": name, "value": value, "holds": None if value is None else holds(value)}

    return [
        check("20 conn req/s >= 12x sklearn", ratio["req_per_s_c20"], lambda v: v >= 12),
        check("20 conn p99 <= 1/8 of sklearn", ratio["p99_c20"], lambda v: v <= 1 / 8),
        check(
            "1 conn p50 <= 0.6 ms", _median(summary, CANDIDATE, C1, "p50_ms"), lambda v: v <= 0.6
        ),
        check(
            "batch >= 100,000 rows/s",
            _median(summary, CANDIDATE, BATCH, "rate"),
            lambda v: v >= 100_000,
        ),
        check("RSS/worker <= sklearn", ratio["rss_mib_per_worker"], lambda v: v <= 1.0),
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


def ratios_text(ratio: dict[str, float | None], checks: list[dict[str, Any]]) -> str:
    lines = [f"{CANDIDATE}/{BASELINE} (medians):"]
    for name, value in ratio.items():
        lines.append(f"  {name:<20} {'n/a' if value is None else f'{value:,.3f}'}")
    lines.append("targets:")
    for check in checks:
        verdict = {True: "HOLDS", False: "MISSED", None: "n/a"}[check["holds"]]
        shown = "n/a" if check["value"] is None else f"{check['value']:,.3f}"
        lines.append(f"  {verdict:<7} {check['target']:<32} {shown}")
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
