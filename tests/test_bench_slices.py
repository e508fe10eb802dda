"""bench.slices: a scenario's interleaved wrk runs merged into one measurement (no wrk needed)."""

from typing import Any

import pytest

from bench import cli, slices


def part(requests: int, seconds: float, latencies_ms: list[float], **extra: Any) -> dict:
    """A bench.runner.measure result whose requests took the given latencies, in equal shares."""
    grid = sorted(latencies_ms[int(k * len(latencies_ms) / 1000) - 1] for k in range(1, 1001))
    return {
        "requests": requests,
        "seconds": seconds,
        "req_per_s": requests / seconds,
        "latency_ms": {"min": min(latencies_ms), "max": max(latencies_ms), "mean": 0.0},
        "latency_grid_us": [value * 1000 for value in grid],
        "errors": {"connect": 0, "status": extra.get("failed", 0)},
        "client_cpu_s": 0.5,
        "connections": 20,
        "rows_per_request": 1,
        "server_cpu_ms": extra.get("cpu_ms", 1000.0),
        "cpu_system_share": 0.25,
        "cpu_ms_by_worker": [600.0, 400.0],
        "connections_by_worker": [10, 10],
        "other_cores": extra.get("other", 0.0),
        "rss_mib_by_worker": [100.0, 110.0],
        "rss_mib_per_worker": 105.0,
    }


def test_one_slice_keeps_its_own_percentiles() -> None:
    latencies = [float(ms) for ms in range(1, 101)]  # 1 … 100 ms, equally often
    merged = slices.merge([part(1000, 2.0, latencies)])
    assert merged["latency_ms"]["p50"] == 50.0
    assert merged["latency_ms"]["p99"] == 99.0
    assert merged["req_per_s"] == 500.0
    assert merged["slices"] == 1


def test_slices_are_weighted_by_their_requests() -> None:
    fast = part(3000, 2.0, [1.0], failed=2, cpu_ms=900.0, other=0.1)
    slow = part(1000, 2.0, [3.0], failed=1, cpu_ms=1100.0, other=0.3)
    merged = slices.merge([fast, slow])
    # 3,000 requests at 1 ms and 1,000 at 3 ms: three quarters of them at 1 ms
    assert merged["latency_ms"]["p50"] == 1.0
    assert merged["latency_ms"]["p75"] == 1.0
    assert merged["latency_ms"]["p90"] == 3.0
    assert (merged["latency_ms"]["min"], merged["latency_ms"]["max"]) == (1.0, 3.0)
    assert merged["requests"] == 4000
    assert merged["req_per_s"] == 1000.0  # 4,000 requests in 4 s, not the mean of 1,500 and 500
    assert merged["cpu_ms_per_request"] == 0.5
    assert merged["errors"]["status"] == 3
    assert merged["cpu_ms_by_worker"] == [1200.0, 800.0]
    assert merged["other_cores"] == 0.2
    assert merged["slice_req_per_s"] == [1500.0, 500.0]


def test_duration_must_split_into_whole_second_slices(capsys: pytest.CaptureFixture) -> None:
    assert cli.parse_args(["--duration", "10", "--slices", "5"]).slices == 5
    with pytest.raises(SystemExit):
        cli.parse_args(["--duration", "10", "--slices", "4"])
    assert "multiple of --slices" in capsys.readouterr().err
