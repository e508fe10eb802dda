"""Metric helpers: batched histogram observation equals prometheus_client's own observe()."""

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from app.metrics import SCORE_BUCKETS, observe_many


def exposition(values: list[float], batched: bool) -> bytes:
    registry = CollectorRegistry()
    histogram = Histogram("scores", "test", buckets=SCORE_BUCKETS, registry=registry)
    if batched:
        observe_many(histogram, values)
    else:
        for value in values:
            histogram.observe(value)
    return b"\n".join(
        line for line in generate_latest(registry).splitlines() if b"_created" not in line
    )


@pytest.mark.parametrize("size", [1, 2, 1000])
def test_observe_many_equals_observe(size: int) -> None:
    rng = random.Random(size)
    values = [rng.choice([0, 1, 5, 6, 49, 50, 51, 99, 100, 250]) for _ in range(size)]
    assert exposition(values, batched=True) == exposition(values, batched=False)
    assert f"scores_count {float(size)}".encode() in exposition(values, batched=True)
