"""The /v1 JSON of scores: one result per row, with reasons when explained."""

from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from app.api.inference import Explain
from app.features import FEATURE_NAMES, N_FEATURES
from app.model import Scores

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _fragment(score: int, is_fraud: bool, ood: bool) -> bytes:
    return orjson.dumps({"fraud-score": score, "is-fraud": is_fraud, "ood-warning": ood})


# Without reasons a result is one of 101 × 2 × 2 objects: serialised once, joined per batch.
_FRAGMENTS = tuple(
    _fragment(score, bool(is_fraud), bool(ood))
    for score in range(101)
    for is_fraud in (0, 1)
    for ood in (0, 1)
)
# The same without its closing brace, for an explained result to go on; each feature's reason up
# to its contribution, as a row's first reason and as a following one (after the "}," that ends
# the reason before it).
_OPEN_FRAGMENTS = tuple(fragment[:-1] for fragment in _FRAGMENTS)
_EXPLAINED_OPENINGS = np.array(
    [opening + b',"reasons":[' for opening in _OPEN_FRAGMENTS], dtype=object
)
_FIRST_REASON_OPENINGS = np.array(
    [b'{"feature":' + orjson.dumps(name) + b',"contribution":' for name in FEATURE_NAMES],
    dtype=object,
)
_NEXT_REASON_OPENINGS = np.array(
    [b"}," + opening for opening in _FIRST_REASON_OPENINGS], dtype=object
)
_VALUE_KEY = b',"value":'
_BASELINE_KEY = b'"baseline":'


def result_dicts(scores: Scores, explain: Explain) -> list[dict[str, Any]]:
    """Each row's result object, in row order; `reasons` and `baseline` only when explained."""
    results = [
        {"fraud-score": score, "is-fraud": is_fraud, "ood-warning": ood}
        for score, is_fraud, ood in zip(
            scores.fraud_score.tolist(),
            scores.is_fraud.tolist(),
            scores.ood_warning.tolist(),
            strict=True,
        )
    ]
    if explain.enabled:
        baseline = scores.baseline
        for result, reasons in zip(results, reasons_of(scores, explain.max_reasons), strict=True):
            result["reasons"] = reasons
            result["baseline"] = baseline
    return results


# Up to this many reasons, a batch's top contributions are found by repeated argmax: k passes of
# n·30 comparisons, 3.5× faster than a sort for 3 reasons of 1,000 rows. A single row is cheaper
# sorted: each pass costs a few µs of NumPy call overhead.
ARGMAX_PASSES_MAX_REASONS = 8
ARGMAX_PASSES_MIN_ROWS = 16


def top_reasons(scores: Scores, max_reasons: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the feature indices, contributions and values of the `max_reasons` largest
    contributions, largest first (ties in feature order): three (n, max_reasons) arrays."""
    assert scores.contributions is not None, "explained scores carry contributions"
    contributions = scores.contributions
    # Plain fancy indexing: take_along_axis costs a single row twice as much, in Python.
    rows = np.arange(len(contributions))[:, None]
    if max_reasons <= ARGMAX_PASSES_MAX_REASONS and len(contributions) >= ARGMAX_PASSES_MIN_ROWS:
        order = _largest_first(contributions, max_reasons)
    else:
        order = np.argsort(-contributions, axis=1, kind="stable")[:, :max_reasons]
    return order, contributions[rows, order], scores.values[rows, order]


def _largest_first(contributions: np.ndarray, count: int) -> np.ndarray:
    """The stable sort's first `count` columns: argmax returns the first of equal maxima, and
    each pass takes its pick out (contributions are finite, so -inf is below every one left)."""
    remaining = contributions.copy()
    rows = np.arange(len(remaining))
    order = np.empty((len(remaining), count), dtype=np.intp)
    for rank in range(count):
        order[:, rank] = picked = remaining.argmax(axis=1)
        remaining[rows, picked] = -np.inf
    return order


def reasons_of(scores: Scores, max_reasons: int) -> list[list[dict[str, Any]]]:
    """Per row, the reason objects of the `max_reasons` largest contributions."""
    if len(scores) == 1:
        rows: Iterable[tuple[list[int], list[float], list[float]]] = [
            _top_reasons_of_one(scores, max_reasons)
        ]
    else:
        order, contributions, values = top_reasons(scores, max_reasons)
        rows = zip(order.tolist(), contributions.tolist(), values.tolist(), strict=True)
    return [
        [
            {"feature": FEATURE_NAMES[index], "contribution": contribution, "value": value}
            for index, contribution, value in zip(*row, strict=True)
        ]
        for row in rows
    ]


_FEATURE_INDICES = range(N_FEATURES)


def _top_reasons_of_one(
    scores: Scores, max_reasons: int
) -> tuple[list[int], list[float], list[float]]:
    """top_reasons() of a single row, as lists, sorted in Python: the single routes' case, where
    NumPy's calls cost more than the 30 numbers (7 against 10-18 µs). Python's sort is stable,
    in reverse too: ties keep the registry order, as the stable argsort does."""
    assert scores.contributions is not None, "explained scores carry contributions"
    (contributions,) = scores.contributions.tolist()
    (values,) = scores.values.tolist()
    order = sorted(_FEATURE_INDICES, key=contributions.__getitem__, reverse=True)[:max_reasons]
    return order, [contributions[index] for index in order], [values[index] for index in order]


def batch_body(scores: Scores, model_version: str, explain: Explain) -> bytes:
    """The batch answer, `{"model-version", "results"}`, as JSON bytes."""
    if explain.enabled:
        # Every piece of every row in one join (the trailing comma of the last row cut off):
        # cheaper than joining each row's pieces, then the rows.
        pieces = _explained_pieces(scores, explain.max_reasons, after=b",")
        joined = b"".join(pieces.ravel().tolist())[:-1]
    else:
        joined = b",".join(result_objects(scores, explain))
    return b'{"model-version":' + orjson.dumps(model_version) + b',"results":[' + joined + b"]}"


def result_objects(scores: Scores, explain: Explain) -> list[bytes]:
    """Each row's result as a JSON object, in row order: the bytes orjson makes of
    result_dicts(), for a batch route to place in its answer."""
    if explain.enabled:
        pieces = _explained_pieces(scores, explain.max_reasons, after=b"")
        return [b"".join(row) for row in pieces.tolist()]
    return [_FRAGMENTS[key] for key in _fragment_keys(scores).tolist()]


def _fragment_keys(scores: Scores) -> np.ndarray:
    """Each row's index in _FRAGMENTS (and _EXPLAINED_OPENINGS)."""
    return scores.fraud_score * 4 + scores.is_fraud * 2 + scores.ood_warning


def _explained_pieces(scores: Scores, max_reasons: int, *, after: bytes) -> np.ndarray:
    """The explained results laid out piece by piece, one row each, in an object array (C-level
    indexing), each row closed by `after`. Building 3,000 reason dicts, or concatenating their
    pieces in Python, cost more than the explain graph itself."""
    order, contributions, values = top_reasons(scores, max_reasons)
    rows, width = order.shape
    # Per row: the result's opening, then per reason its opening, contribution, the value's key
    # and the value, then the row's closing (which ends its last reason).
    pieces = np.empty((rows, 2 + 4 * width), dtype=object)
    pieces[:, 0] = _EXPLAINED_OPENINGS[_fragment_keys(scores)]
    pieces[:, 1] = _FIRST_REASON_OPENINGS[order[:, 0]]
    pieces[:, 5:-1:4] = _NEXT_REASON_OPENINGS[order[:, 1:]]
    pieces[:, 3:-1:4] = _VALUE_KEY
    # Contributions and values interleaved (c, v, c, v …), written by one orjson call.
    numbers = _numbers(np.stack((contributions, values), axis=-1))
    pieces[:, 2:-1:2] = np.array(numbers, dtype=object).reshape(rows, 2 * width)
    pieces[:, -1] = b"}]," + _BASELINE_KEY + orjson.dumps(scores.baseline) + b"}" + after
    return pieces


def _numbers(array: np.ndarray) -> list[bytes]:
    """Each element of a float array, row-major, as orjson writes a float (one call for all)."""
    text = orjson.dumps(np.ascontiguousarray(array, dtype=np.float64).ravel(), option=_NUMPY)
    return text[1:-1].split(b",")
