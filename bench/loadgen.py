"""Run wrk (one thread: the two cores belong to the server) with bench/wrk/post.lua and parse it."""

import json
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bodies import Body

SCRIPT = Path(__file__).resolve().parent / "wrk" / "post.lua"
MARKER = "BENCH_RESULT "
# A slow answer is a result to report, not a socket error: sklearn's 1,000-row batches take a while.
REQUEST_TIMEOUT = "10s"


class WrkMissing(RuntimeError):
    """wrk is not installed."""


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk not found: apt-get install wrk")
    return path


def wrk_version() -> str:
    try:
        run = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, timeout=10)
    except (WrkMissing, OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (
        (run.stdout or run.stderr).splitlines()[0].strip()
        if (run.stdout or run.stderr)
        else "unknown"
    )


@dataclass
class Run:
    """A wrk process under way; `finish()` waits for it and returns its numbers."""

    process: subprocess.Popen[str]
    duration: int
    client_cpu_before: float

    def finish(self) -> dict[str, Any]:
        try:
            stdout, stderr = self.process.communicate(timeout=self.duration + 60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise RuntimeError(f"wrk ran past {self.duration + 60} s") from None
        result = _parse(stdout, stderr, self.process.returncode)
        result["client_cpu_s"] = round(_children_cpu() - self.client_cpu_before, 3)
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def start(
    url: str,
    body: Body,
    api_key: str,
    connections: int,
    duration: int,
    script: Path = SCRIPT,
) -> Run:
    """Start a closed-loop wrk run; it ends by itself after `duration` seconds."""
    command = [wrk_binary(), "-t1", f"-c{connections}", f"-d{duration}s",
               "--timeout", REQUEST_TIMEOUT, "-s", str(script), url]  # fmt: skip
    env = os.environ | {"BENCH_BODY": str(body.path), "BENCH_API_KEY": api_key}
    if body.header_length is not None:  # bench/wrk/oip.lua: OIP's binary extension
        env["BENCH_HEADER_LENGTH"] = str(body.header_length)
    cpu_before = _children_cpu()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return Run(process, duration, cpu_before)


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children: wrk's own cost shares the two cores."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _parse(stdout: str, stderr: str, returncode: int) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            break
    else:
        raise RuntimeError(f"wrk exited with {returncode} and no result:\n{stdout}\n{stderr}")
    seconds = raw["duration_us"] / 1e6
    latency = raw["latency_us"]
    percentiles = {key: value / 1000 for key, value in latency["percentiles"].items()}
    return {
        "requests": int(raw["requests"]),
        "seconds": round(seconds, 3),
        "req_per_s": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "latency_ms": {
            "p50": percentiles["50"],
            "p75": percentiles["75"],
            "p90": percentiles["90"],
            "p99": percentiles["99"],
            "p99.9": percentiles["99.9"],
            "min": latency["min"] / 1000,
            "max": latency["max"] / 1000,
            "mean": round(latency["mean"] / 1000, 3),
            "stdev": round(latency["stdev"] / 1000, 3),
        },
        # The quantile function at 0.1 %, 0.2 % … 100 % (µs): what bench.slices merges.
        "latency_grid_us": [float(value) for value in latency["grid"]],
        # errors.status counts answers above 399; the others are socket-level failures.
        "errors": {key: int(value) for key, value in raw["errors"].items()},
    }
