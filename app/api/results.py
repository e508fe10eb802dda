"""The /v1 JSON of scores: one result per row, with reasons when explained."""

from typing import Any

import numpy as np
import orjson

from app.api.inference import Explain
from app.features import FEATURE_NAMES
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
# The same without its closing brace, for an explained result to go on; and each feature's
# reason up to its contribution.
_OPEN_FRAGMENTS = tuple(fragment[:-1] for fragment in _FRAGMENTS)
_REASON_OPENINGS = tuple(
    b'{"feature":' + orjson.dumps(name) + b',"contribution":' for name in FEATURE_NAMES
)


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


def top_reasons(scores: Scores, max_reasons: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the feature indices, contributions and values of the `max_reasons` largest
    contributions, largest first (ties in feature order): three (n, max_reasons) arrays."""
    assert scores.contributions is not None, "explained scores carry contributions"
    order = np.argsort(-scores.contributions, axis=1, kind="stable")[:, :max_reasons]
    contributions = np.take_along_axis(scores.contributions, order, axis=1)
    return order, contributions, np.take_along_axis(scores.values, order, axis=1)


def reasons_of(scores: Scores, max_reasons: int) -> list[list[dict[str, Any]]]:
    """Per row, the reason objects of the `max_reasons` largest contributions."""
    order, top_contributions, top_values = top_reasons(scores, max_reasons)
    contributions, values = top_contributions.tolist(), top_values.tolist()
    return [
        [
            {"feature": FEATURE_NAMES[index], "contribution": contribution, "value": value}
            for index, contribution, value in zip(indices, row_contribution, row_value, strict=True)
        ]
        for indices, row_contribution, row_value in zip(
            order.tolist(), contributions, values, strict=True
        )
    ]


def batch_body(scores: Scores, model_version: str, explain: Explain) -> bytes:
    """The batch answer, `{"model-version", "results"}`, as JSON bytes."""
    keys = (scores.fraud_score * 4 + scores.is_fraud * 2 + scores.ood_warning).tolist()
    if explain.enabled:
        joined = _explained(scores, keys, explain.max_reasons)
    else:
        joined = b",".join([_FRAGMENTS[key] for key in keys])
    return b'{"model-version":' + orjson.dumps(model_version) + b',"results":[' + joined + b"]}"


def _explained(scores: Scores, keys: list[int], max_reasons: int) -> bytes:
    """The explained results, joined: the same bytes orjson makes of result_dicts(), built from
    fragments. 3,000 reason dicts cost more than scoring the batch they explain."""
    order, contributions, values = top_reasons(scores, max_reasons)
    reasons = [
        _REASON_OPENINGS[index] + contribution + b',"value":' + value + b"}"
        for index, contribution, value in zip(
            order.ravel().tolist(), _numbers(contributions), _numbers(values), strict=True
        )
    ]
    width = order.shape[1]
    tail = b'],"baseline":' + orjson.dumps(scores.baseline) + b"}"
    return b",".join(
        [
            _OPEN_FRAGMENTS[key]
            + b',"reasons":['
            + b",".join(reasons[start : start + width])
            + tail
            for key, start in zip(keys, range(0, len(reasons), width), strict=True)
        ]
    )


def _numbers(array: np.ndarray) -> list[bytes]:
    """Each element of a float array, row-major, as orjson writes a float (one call for all)."""
    text = orjson.dumps(np.ascontiguousarray(array, dtype=np.float64).ravel(), option=_NUMPY)
    return text[1:-1].split(b",")
