"""The model's 30 inputs, in order, and the conversion of validated rows to matrices."""

from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any

import numpy as np

FEATURE_NAMES: tuple[str, ...] = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")
N_FEATURES = len(FEATURE_NAMES)

# The forest compares float32 thresholds; a finite double beyond float32's range would become
# inf on the cast, which scikit-learn rejects. Clipping keeps every comparison's outcome.
_FLOAT32_MAX = float(np.finfo(np.float32).max)

row_values: "attrgetter[tuple[float, ...]]" = attrgetter(*FEATURE_NAMES)
"""The feature values of a validated transaction, in FEATURE_NAMES order."""


def to_matrix(rows: Iterable[Sequence[float]]) -> np.ndarray:
    """Rows of feature values to an (n, 30) float64 matrix (the values as the client sent them)."""
    return np.asarray(list(rows), dtype=np.float64).reshape(-1, N_FEATURES)


def to_model_input(matrix: np.ndarray) -> np.ndarray:
    """The float32 matrix both engines take: values clipped to float32's finite range."""
    return np.clip(matrix, -_FLOAT32_MAX, _FLOAT32_MAX).astype(np.float32)


def row_to_dict(values: Sequence[Any]) -> dict[str, Any]:
    """One row of feature values keyed by feature name (for cards, fixtures and examples)."""
    return dict(zip(FEATURE_NAMES, values, strict=True))
