"""The /v1 JSON of scores: one result per row, with reasons when explained."""

from typing import Any

import numpy as np
import orjson

from app.api.inference import Explain
from app.features import FEATURE_NAMES
from app.model import Scores


def _fragment(score: int, is_fraud: bool, ood: bool) -> bytes:
    return orjson.dumps({"fraud-score": score, "is-fraud": is_fraud, "ood-warning": ood})


# Without reasons a result is one of 101 × 2 × 2 objects: serialised once, joined per batch.
_FRAGMENTS = tuple(
    _fragment(score, bool(is_fraud), bool(ood))
    for score in range(101)
    for is_fraud in (0, 1)
    for ood in (0, 1)
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


def reasons_of(scores: Scores, max_reasons: int) -> list[list[dict[str, Any]]]:
    """Per row, the `max_reasons` largest contributions, largest first (ties in feature order)."""
    assert scores.contributions is not None, "explained scores carry contributions"
    order = np.argsort(-scores.contributions, axis=1, kind="stable")[:, :max_reasons]
    contributions = np.take_along_axis(scores.contributions, order, axis=1).tolist()
    values = np.take_along_axis(scores.values, order, axis=1).tolist()
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
    if explain.enabled:
        results = result_dicts(scores, explain)
        return orjson.dumps({"model-version": model_version, "results": results})
    keys = (scores.fraud_score * 4 + scores.is_fraud * 2 + scores.ood_warning).tolist()
    joined = b",".join([_FRAGMENTS[key] for key in keys])
    return b'{"model-version":' + orjson.dumps(model_version) + b',"results":[' + joined + b"]}"
