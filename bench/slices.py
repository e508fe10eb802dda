"""One scenario's interleaved slices (separate wrk runs) merged into one measurement.

A server's cost per request drifts by up to 25 % within a round on these machines (PERF-NOTES:
compare in the same run, alternating). A scenario measured in one stretch and its reference in
the next compare two moments of the machine; measured in slices taken in turn with the other
scenarios, both see the same moments.
"""

import statistics
from typing import Any

import numpy as np

PERCENTILES = {"p50": 50.0, "p75": 75.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The measurement of all `parts` (bench.runner.measure results of one scenario) together:
    sums of requests, seconds and CPU, and the latency percentiles of all their requests."""
    first = parts[0]
    requests = sum(int(part["requests"]) for part in parts)
    seconds = sum(float(part["seconds"]) for part in parts)
    server_cpu_ms = sum(float(part["server_cpu_ms"]) for part in parts)
    system_cpu_ms = sum(
        float(part["cpu_system_share"] or 0.0) * float(part["server_cpu_ms"]) for part in parts
    )
    req_per_s = requests / seconds if seconds else 0.0
    rss = [part["rss_mib_per_worker"] for part in parts if part["rss_mib_per_worker"]]
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "req_per_s": round(req_per_s, 1),
        "latency_ms": merged_latency(parts),
        "errors": {
            kind: sum(int(part["errors"][kind]) for part in parts) for kind in first["errors"]
        },
        "client_cpu_s": round(sum(float(part["client_cpu_s"]) for part in parts), 3),
        "connections": first["connections"],
        "rows_per_request": first["rows_per_request"],
        "rows_per_s": round(req_per_s * first["rows_per_request"], 1),
        "server_cpu_ms": round(server_cpu_ms, 1),
        "cpu_ms_per_request": round(server_cpu_ms / max(requests, 1), 4),
        "cpu_system_share": round(system_cpu_ms / server_cpu_ms, 3) if server_cpu_ms else None,
        "cpu_ms_by_worker": _column_sums(parts, "cpu_ms_by_worker", 1),
        "connections_by_worker": _column_sums(parts, "connections_by_worker", 0),
        "other_cores": round(
            sum(float(p["other_cores"]) * float(p["seconds"]) for p in parts) / max(seconds, 1e-3),
            2,
        ),
        "rss_mib_by_worker": parts[-1]["rss_mib_by_worker"],
        "rss_mib_per_worker": round(statistics.fmean(rss), 1) if rss else 0.0,
        "slices": len(parts),
        # Each slice's rate: how much the machine moved while this scenario was measured.
        "slice_req_per_s": [part["req_per_s"] for part in parts],
    }


def merged_latency(parts: list[dict[str, Any]]) -> dict[str, float]:
    """Percentiles (ms) of the mixture of the slices' latency distributions, each slice weighted
    by its requests: every grid point of a slice stands for 1/1,000 of that slice's requests."""
    values = np.concatenate([np.asarray(part["latency_grid_us"], dtype=float) for part in parts])
    weights = np.concatenate(
        [
            np.full(
                len(part["latency_grid_us"]), int(part["requests"]) / len(part["latency_grid_us"])
            )
            for part in parts
        ]
    )
    order = np.argsort(values, kind="stable")
    values, cumulative = values[order], np.cumsum(weights[order])
    total = cumulative[-1] if len(cumulative) and cumulative[-1] > 0 else 1.0
    latency = {
        name: float(
            values[min(np.searchsorted(cumulative, total * p / 100 - 1e-9), len(values) - 1)]
        )
        / 1000
        for name, p in PERCENTILES.items()
    }
    count = sum(int(part["requests"]) for part in parts) or 1
    mean = sum(float(p["latency_ms"]["mean"]) * int(p["requests"]) for p in parts) / count
    return {
        **latency,
        "min": min(float(part["latency_ms"]["min"]) for part in parts),
        "max": max(float(part["latency_ms"]["max"]) for part in parts),
        "mean": round(mean, 3),
    }


def _column_sums(parts: list[dict[str, Any]], key: str, digits: int) -> list[float]:
    columns = zip(*(part[key] for part in parts), strict=True)
    return [round(sum(column), digits) for column in columns]
