"""One configuration in one round: a fresh server, a warm-up, then its scenarios measured in
interleaved slices (each scenario's `slices` wrk runs taken in turn with the others')."""

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import loadgen, procfs, server, slices, store
from bench.bodies import Body
from bench.configs import Config

OIP_SCRIPT = loadgen.SCRIPT.with_name("oip.lua")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str  # with the query string, if any
    body: Body
    connections: int
    rows: int  # transactions per request

    @property
    def headers(self) -> dict[str, str]:
        """What the request needs beyond the key and JSON content type (OIP's binary extension)."""
        if self.body.header_length is None:
            return {}
        return {
            "Inference-Header-Content-Length": str(self.body.header_length),
            "Content-Type": "application/octet-stream",
        }


@dataclass(frozen=True)
class Plan:
    """What every configuration and round runs through."""

    model: Path
    scenarios: dict[str, Scenario]
    duration: int
    warmup: int
    batch_rows: int
    store_uri: str | None  # the bench's Redis, holding the by-id scenarios' ids; None: none
    slices: int = 1  # wrk runs per scenario, `duration` seconds in all, interleaved

    @property
    def slice_seconds(self) -> int:
        return max(self.duration // self.slices, 1)


def runnable(plan: Plan, config: Config) -> list[Scenario]:
    """The configuration's scenarios that this run can measure (by-id needs the bench's Redis)."""
    return [
        plan.scenarios[name]
        for name in config.scenarios
        if plan.store_uri is not None or not name.startswith("by-id")
    ]


def run_config(plan: Plan, config: Config, round_number: int, run_dir: Path) -> dict[str, Any]:
    """Start the configuration's server, measure it, stop it (always), return the numbers."""
    started = time.monotonic()
    env = {}
    if config.feature_store and plan.store_uri is not None:
        env = {
            "FEATURE_STORE_URI": plan.store_uri,
            "FEATURE_STORE_PREFIX": store.PREFIX,
            # Saturated on purpose, a 1,000-id lookup queues for longer than the default 50 ms
            # budget, and a rate that counts 503s measures nothing: the budget an operator would
            # give such batches.
            "FEATURE_STORE_TIMEOUT_MS": str(store.BENCH_TIMEOUT_MS),
        }
    srv = server.start(
        run_dir,
        config.model_path(plan.model),
        config.engine,
        config.balance,
        http=config.http,
        env=env,
    )
    scenarios = runnable(plan, config)
    try:
        startup_s = round(time.monotonic() - started, 1)
        engines = srv.engines()
        if any(engine != config.expected_engine for engine in engines):
            # Not fatal: the numbers are still reported, but labelled with what really served.
            print(f"  warning: {config.name} served with {engines}, not {config.expected_engine}")
        for scenario in scenarios:
            body = scenario.body.path.read_bytes()
            server.check_answer(srv, scenario.path, body, scenario.headers)
        _warm_up(plan, srv, scenarios)
        parts: dict[str, list[dict[str, Any]]] = {scenario.name: [] for scenario in scenarios}
        for _ in range(plan.slices):
            for scenario in scenarios:
                settle(srv)
                parts[scenario.name].append(measure(srv, scenario, plan.slice_seconds))
        results = {}
        for scenario in scenarios:
            results[scenario.name] = slices.merge(parts[scenario.name])
            _print_line(config.name, round_number, scenario, results[scenario.name])
        workers_now = procfs.worker_pids(srv.pid)
    finally:
        srv.stop()
    return {
        "config": config.name,
        "round": round_number,
        "engine": engines[0] if len(set(engines)) == 1 else "mixed",  # what really served
        "engines_loaded": engines,
        "balance": config.balance,
        "http": config.http,
        "model_path": str(config.model_path(plan.model)),
        "startup_s": startup_s,
        "worker_pids": srv.workers,
        "workers_restarted": sorted(workers_now) != sorted(srv.workers),
        "scenarios": results,
        "server_log": server.log_summary(srv),
    }


def _start_wrk(srv: server.Server, scenario: Scenario, connections: int, seconds: int) -> Any:
    script = OIP_SCRIPT if scenario.body.header_length is not None else loadgen.SCRIPT
    return loadgen.start(
        srv.url + scenario.path,
        scenario.body,
        srv.api_key,
        connections,
        seconds,
        script=script,
    )


def _warm_up(plan: Plan, srv: server.Server, scenarios: list[Scenario]) -> None:
    """Every request kind under load first: imports, caches and the threadpool start warm."""
    if not plan.warmup:
        return
    for scenario in scenarios:
        seconds = plan.warmup if scenario.name == scenarios[0].name else 1
        _start_wrk(srv, scenario, min(scenario.connections, 8), seconds).finish()


# The server is idle once its processes use under 5 % of a core; wait at most this long.
SETTLE_POLL_S, SETTLE_IDLE_SHARE, SETTLE_MAX_S = 0.1, 0.05, 5.0


def settle(srv: server.Server) -> None:
    """Wait until the server has finished what the last wrk run left in flight.

    wrk stops at its deadline with requests under way: eight 1,000-row batches are 0.2-0.3 s of
    server CPU, which would be counted in (and slow) whatever is measured next.
    """
    deadline = time.monotonic() + SETTLE_MAX_S
    pids = procfs.group_pids(srv.pid)
    before = _total_cpu(procfs.cpu_seconds(pids))
    while time.monotonic() < deadline:
        time.sleep(SETTLE_POLL_S)
        now = _total_cpu(procfs.cpu_seconds(pids))
        if now - before < SETTLE_POLL_S * SETTLE_IDLE_SHARE:
            return
        before = now


def _total_cpu(seconds: dict[int, tuple[float, float]]) -> float:
    return sum(user + system for user, system in seconds.values())


def measure(srv: server.Server, scenario: Scenario, duration: int) -> dict[str, Any]:
    """wrk's numbers plus the server's CPU time, memory and connection placement meanwhile."""
    pids = procfs.group_pids(srv.pid)
    cpu_before, busy_before = procfs.cpu_seconds(pids), procfs.machine_busy_seconds()
    run = _start_wrk(srv, scenario, scenario.connections, duration)
    try:
        # Mid-run, every keep-alive connection is open and placed: count them per worker.
        time.sleep(duration / 2)
        placed = procfs.connections_per_pid(srv.port, srv.workers)
        result = run.finish()
    finally:
        run.stop()
    pids = sorted(set(pids) | set(procfs.group_pids(srv.pid)))
    cpu_after, busy_after = procfs.cpu_seconds(pids), procfs.machine_busy_seconds()
    user_delta, sys_delta = _cpu_delta(cpu_before, cpu_after)
    cpu_delta = {pid: user_delta[pid] + sys_delta[pid] for pid in cpu_after}
    requests = max(int(result["requests"]), 1)
    server_cpu_ms = sum(cpu_delta.values()) * 1000
    rss = [procfs.rss_mib(pid) for pid in srv.workers]
    other_cpu_s = busy_after - busy_before - server_cpu_ms / 1000 - float(result["client_cpu_s"])
    result |= {
        "connections": scenario.connections,
        "rows_per_request": scenario.rows,
        "rows_per_s": round(float(result["req_per_s"]) * scenario.rows, 1),
        "server_cpu_ms": round(server_cpu_ms, 1),
        "cpu_ms_per_request": round(server_cpu_ms / requests, 4),
        # The kernel's part (socket reads and writes on loopback, scheduling) of the server's CPU.
        "cpu_system_share": round(sum(sys_delta.values()) * 1000 / server_cpu_ms, 3)
        if server_cpu_ms
        else None,
        "cpu_ms_by_worker": [round(cpu_delta.get(pid, 0.0) * 1000, 1) for pid in srv.workers],
        "connections_by_worker": [placed.get(pid, 0) for pid in srv.workers],
        # Cores busy with neither the server nor wrk, on average: how noisy the machine was.
        "other_cores": round(max(other_cpu_s, 0.0) / max(float(result["seconds"]), 1e-3), 2),
        "rss_mib_by_worker": [round(value, 1) if value else None for value in rss],
        "rss_mib_per_worker": round(statistics.fmean(v for v in rss if v) if any(rss) else 0.0, 1),
    }
    return result


def _cpu_delta(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]
) -> tuple[dict[int, float], dict[int, float]]:
    """Per process, user and system seconds spent in between (a process new since counts whole)."""
    user = {pid: a[0] - before.get(pid, (0.0, 0.0))[0] for pid, a in after.items()}
    system = {pid: a[1] - before.get(pid, (0.0, 0.0))[1] for pid, a in after.items()}
    return user, system


def _print_line(config: str, round_number: int, scenario: Scenario, result: dict) -> None:
    latency = result["latency_ms"]
    rate = (
        f"{result['rows_per_s']:,.0f} rows/s"
        if scenario.rows > 1
        else f"{result['req_per_s']:,.0f} req/s"
    )
    print(
        f"  round {round_number} {config:<15} {scenario.name:<11} {rate:>16}  "
        f"p50 {latency['p50']:.2f} ms  p99 {latency['p99']:.2f} ms  "
        f"cpu {result['cpu_ms_per_request']:.3f} ms/req  "
        f"conns/worker {result['connections_by_worker']}  other load {result['other_cores']:.2f}  "
        f"slices {'/'.join(f'{rate:,.0f}' for rate in result['slice_req_per_s'])} req/s",
        flush=True,
    )
