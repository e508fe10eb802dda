"""Where the numbers came from: the machine, the libraries and the model measured."""

import hashlib
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import loadgen

LIBRARIES = (
    "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "pydantic-core",
    "orjson", "numpy", "scikit-learn", "onnxruntime", "skl2onnx", "onnx", "prometheus-client",
)  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": _library_versions(),
        "wrk": loadgen.wrk_version(),
        "loadavg_end": list(os.getloadavg()),
        "env": {
            key: os.environ[key]
            for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
            if key in os.environ
        },
    }


def model_info(path: Path) -> dict[str, Any]:
    """Size, digest, trees and nodes of the forest (loading it takes well under a second)."""
    payload = path.read_bytes()
    info: dict[str, Any] = {
        "path": str(path),
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    onnx = path.with_suffix(".onnx")
    if onnx.is_file():
        info["onnx_bytes"] = onnx.stat().st_size
    try:
        import joblib

        forest = joblib.load(path)
        trees = [estimator.tree_ for estimator in forest.estimators_]
        info |= {
            "trees": len(trees),
            "nodes": int(sum(tree.node_count for tree in trees)),
            "depth": [int(min(t.max_depth for t in trees)), int(max(t.max_depth for t in trees))],
        }
    except Exception as error:  # an unexpected artifact is still benchmarked
        info["forest"] = f"not inspected ({type(error).__name__})"
    return info
