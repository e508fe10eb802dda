"""Prometheus collectors, summed over every worker process when PROMETHEUS_MULTIPROC_DIR is set."""

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app import metrics_dir

# prometheus_client picks its value class when first imported: a worker of plain
# `uvicorn --workers N` must have found its supervisor's directory before that.
metrics_dir.use_supervisor_dir()

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = metrics_dir.MULTIPROC_ENV
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
SCORE_BUCKETS = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)

REQUESTS = Counter(
    "fraud_http_requests_total", "HTTP requests answered.", ["route", "method", "status"]
)
LATENCY = Histogram(
    "fraud_http_request_duration_seconds",
    "Time from request received to response sent.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter("fraud_predictions_total", "Transactions scored.", ["outcome"])
SCORES = Histogram("fraud_score", "Fraud scores returned (0-100).", buckets=SCORE_BUCKETS)
OOD_WARNINGS = Counter("fraud_ood_warnings_total", "Transactions scored with ood-warning true.")
BATCH_SIZE = Histogram(
    "fraud_batch_transactions", "Transactions per batch request.", buckets=(1, 10, 100, 500, 1000)
)
MODEL_LOAD_FAILURES = Counter("fraud_model_load_failures_total", "Model loads that failed.")
RATE_LIMITED = Counter("fraud_rate_limit_rejections_total", "Requests refused with 429.")
RATE_LIMIT_ERRORS = Counter(
    "fraud_rate_limit_storage_errors_total",
    "Rate-limit checks skipped because the storage (Redis) failed: the service failed open.",
)
WORKER_STARTS = Counter("fraud_worker_starts_total", "Worker processes started.")
MODEL_LOADED = Gauge(
    "fraud_model_loaded", "1 when every live worker has a model.", multiprocess_mode="livemin"
)
MODEL_INFO = Gauge(
    "fraud_model_info",
    "The model being served (value 1).",
    ["model_version", "engine"],
    multiprocess_mode="livemax",
)
BASELINE_MEAN = Gauge(
    "fraud_score_baseline_mean",
    "Mean fraud score on the training hold-out (the drift baseline).",
    multiprocess_mode="livemax",
)
BASELINE_STDDEV = Gauge(
    "fraud_score_baseline_stddev",
    "Standard deviation of fraud scores on the training hold-out.",
    multiprocess_mode="livemax",
)

_FRAUD = PREDICTIONS.labels(outcome="fraud")
_LEGITIMATE = PREDICTIONS.labels(outcome="legitimate")


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route, method, str(status)).observe(seconds)


def observe_scores(scores: Any) -> None:
    """Count a call's app.model.Scores with one increment per series, however many rows."""
    rows = len(scores)
    frauds = int(np.count_nonzero(scores.is_fraud))
    warnings = int(np.count_nonzero(scores.ood_warning))
    if frauds:
        _FRAUD.inc(frauds)
    if rows > frauds:
        _LEGITIMATE.inc(rows - frauds)
    if warnings:
        OOD_WARNINGS.inc(warnings)
    observe_many(SCORES, scores.fraud_score)


def observe_many(histogram: Histogram, values: Sequence[float] | np.ndarray) -> None:
    """histogram.observe(v) for each v, as one increment per bucket touched.

    prometheus_client has no weighted observe, and each observe() is two locked writes to the
    multiprocess files: 3.5 ms for a 1,000-row batch (bench profile). This uses the pinned
    client's internal buckets; tests/test_metrics.py checks it against observe() itself.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 1:
        histogram.observe(float(values[0]))
        return
    # A value lands in the first bucket whose upper bound is >= it, as observe() does.
    buckets = np.searchsorted(histogram._upper_bounds, values, side="left")
    for index, count in zip(*np.unique(buckets, return_counts=True), strict=True):
        histogram._buckets[int(index)].inc(int(count))
    histogram._sum.inc(float(values.sum()))


def model_state(version: str | None, engine: str | None, baseline: dict[str, Any] | None) -> None:
    """Record what this worker serves (None: no model)."""
    MODEL_LOADED.set(0 if version is None else 1)
    if version is not None:
        MODEL_INFO.labels(version, engine or "none").set(1)
    if baseline and "mean" in baseline and "std" in baseline:
        BASELINE_MEAN.set(float(baseline["mean"]))
        BASELINE_STDDEV.set(float(baseline["std"]))


def worker_started() -> None:
    """Count this worker and drop the live gauges of workers that died (their pids are gone)."""
    WORKER_STARTS.inc()
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    for pid in _dead_pids(Path(directory)):
        multiprocess.mark_process_dead(pid, directory)


def _dead_pids(directory: Path) -> set[int]:
    pids = set()
    for path in directory.glob("gauge_live*_*.db"):
        match = re.search(r"_(\d+)\.db$", path.name)
        if match and not _alive(int(match.group(1))):
            pids.add(int(match.group(1)))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render() -> tuple[bytes, str]:
    """The exposition text: a fresh multiprocess registry per scrape, so every worker is summed."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# --- the online feature store (app/featurestore/online.py) --------------------------------------
STORE_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

FEATURE_STORE_LOOKUPS = Counter(
    "fraud_feature_store_lookups_total",
    "Transaction ids looked up in the online feature store, by outcome "
    "(found, not_found, invalid, error: the store was unavailable).",
    ["outcome"],
)
FEATURE_STORE_LATENCY = Histogram(
    "fraud_feature_store_lookup_duration_seconds",
    "Time per feature store fetch (one Redis round trip for any number of ids), errors included.",
    buckets=STORE_LATENCY_BUCKETS,
)
_LOOKUP_OUTCOMES = {
    outcome: FEATURE_STORE_LOOKUPS.labels(outcome=outcome)
    for outcome in ("found", "not_found", "invalid", "error")
}


def observe_lookups(outcomes: dict[str, int], seconds: float) -> None:
    """One fetch: ids per outcome (one increment per outcome present), and its duration."""
    for outcome, count in outcomes.items():
        if count:
            _LOOKUP_OUTCOMES[outcome].inc(count)
    FEATURE_STORE_LATENCY.observe(seconds)
