"""The model alone: one ONNX Runtime session (one thread) scoring 1,000-row batches, in-process."""

import time
from pathlib import Path

from app.engines import OnnxEngine
from app.features import to_model_input
from bench.bodies import batch_rows


def onnx_rows_per_s(onnx_path: Path, rows: int, seconds: float) -> dict[str, float]:
    """Rows per second of the plain session on `rows`-row batches for about `seconds`."""
    engine = OnnxEngine(onnx_path.read_bytes())
    matrix = to_model_input(batch_rows(rows))
    for _ in range(20):  # warm-up: allocations, caches
        engine.fraud_probability(matrix)
    calls, started = 0, time.perf_counter()
    cpu_started = time.process_time()
    while (elapsed := time.perf_counter() - started) < seconds:
        engine.fraud_probability(matrix)
        calls += 1
    cpu = time.process_time() - cpu_started
    return {
        "rows_per_s": round(calls * rows / elapsed, 1),
        "ms_per_call": round(elapsed / calls * 1000, 3),
        "cpu_share": round(cpu / elapsed, 3),  # ~1.0: it had its core to itself
    }
