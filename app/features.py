"""The feature registry: the model's 30 inputs (names, order, type) and the online store's layout.

Training, the offline-store reader, the loader and push commands, the request schemas, the
by-id routes and the docs all read this module; nothing else lists the features.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any

import numpy as np

FEATURE_NAMES: tuple[str, ...] = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")
N_FEATURES = len(FEATURE_NAMES)
FEATURE_DTYPE = np.float64  # every feature: a finite number, kept as sent (the model takes float32)

# The forest compares float32 thresholds; a finite double beyond float32's range would become
# inf on the cast, which scikit-learn rejects. Clipping keeps every comparison's outcome.
_FLOAT32_MAX = float(np.finfo(np.float32).max)

row_values: "attrgetter[tuple[float, ...]]" = attrgetter(*FEATURE_NAMES)
"""The feature values of a validated transaction, in FEATURE_NAMES order."""

# --- the online store's layout (the contract's "Scoring by transaction id") ---------------------
DEFAULT_STORE_PREFIX = "fraud:v1"
WRITTEN_AT_FIELD = "_written_at"
"""Epoch seconds at which a record was written: the one field of a record that is not a feature."""
META_FIELDS = ("features", "materialized_at", "rows", "source")
TRANSACTION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""An id as the by-id routes accept it and as it appears in a key."""
NUMBER_TEXT = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
"""A stored value: the text of a JSON number (the request body's rule), as repr() writes floats."""


def to_matrix(rows: Iterable[Sequence[float]]) -> np.ndarray:
    """Rows of feature values to an (n, 30) float64 matrix (the values as the client sent them)."""
    return np.asarray(list(rows), dtype=FEATURE_DTYPE).reshape(-1, N_FEATURES)


def to_model_input(matrix: np.ndarray) -> np.ndarray:
    """The float32 matrix both engines take: values clipped to float32's finite range."""
    return np.clip(matrix, -_FLOAT32_MAX, _FLOAT32_MAX).astype(np.float32)


def row_to_dict(values: Sequence[Any]) -> dict[str, Any]:
    """One row of feature values keyed by feature name (for cards, fixtures and examples)."""
    return dict(zip(FEATURE_NAMES, values, strict=True))


def transaction_key(prefix: str, transaction_id: str) -> str:
    """`{prefix}:txn:{id}`: the hash holding one transaction's features."""
    return f"{prefix}:txn:{transaction_id}"


def meta_key(prefix: str) -> str:
    """`{prefix}:meta`: what the loader last materialized, written after every record."""
    return f"{prefix}:meta"


def encode_value(value: float) -> str:
    """A feature value as the store keeps it: repr() of the float, the shortest exact text."""
    return repr(float(value))


def record_fields(values: Sequence[float], written_at: float) -> dict[str, str]:
    """The hash fields of one transaction: the 30 features and `_written_at`."""
    fields = {name: encode_value(value) for name, value in zip(FEATURE_NAMES, values, strict=True)}
    fields[WRITTEN_AT_FIELD] = str(int(written_at))
    return fields


def meta_record(*, rows: int, source: str, materialized_at: float) -> dict[str, str]:
    """The meta hash: the feature list (comma-separated, in order), when, rows, and from where."""
    return {
        "features": ",".join(FEATURE_NAMES),
        "materialized_at": str(int(materialized_at)),
        "rows": str(rows),
        "source": source,
    }


def meta_features(meta: Mapping[str, str]) -> tuple[str, ...] | None:
    """The feature list a (decoded) meta hash declares, or None when it has none."""
    text = meta.get("features")
    return None if text is None else tuple(name.strip() for name in text.split(","))
