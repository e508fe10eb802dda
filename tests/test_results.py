"""The /v1 renderers: the batch's fragments give the very bytes orjson makes of the result dicts."""

import dataclasses
from pathlib import Path

import numpy as np
import orjson
import pytest

from app.api.inference import Explain
from app.api.results import batch_body, reasons_of, result_dicts, result_objects, top_reasons
from app.features import FEATURE_NAMES
from app.model import Scores, load_model
from app.synthetic import generate


@pytest.fixture(scope="module")
def explained(model_path: Path) -> Scores:
    features, _ = generate(rows=500, seed=41, fraud_rate=0.3)
    features[7] = features[8]  # a duplicated row
    features[9, 3] = -0.0
    features[10, :] = 0.0  # many features not on any path: tied contributions of 0
    # Values whose text has exponents, signs and many digits, in every position of a reason.
    extremes = [1e300, -1e-300, 5e-324, 1e16, -123456789012345.6, 20.0, -0.0, 1.5e-7]
    features[11, :] = np.resize(extremes, features.shape[1])
    features[12, :] = np.resize(extremes[::-1], features.shape[1])
    return load_model(model_path).score(features, explain=True)


@pytest.mark.parametrize("max_reasons", [1, 3, 29, 30])
def test_explained_batch_bytes_equal_orjson_of_the_dicts(
    explained: Scores, max_reasons: int
) -> None:
    explain = Explain(True, max_reasons)
    expected = orjson.dumps({"model-version": "v-1", "results": result_dicts(explained, explain)})
    assert batch_body(explained, "v-1", explain) == expected


@pytest.mark.parametrize(
    "explain", [Explain(), Explain(True, 1), Explain(True, 3), Explain(True, 30)]
)
def test_each_result_object_is_orjson_of_its_dict(explained: Scores, explain: Explain) -> None:
    """What the by-id batch places between an id and the model version, row by row."""
    objects = result_objects(explained, explain)
    assert objects == [orjson.dumps(result) for result in result_dicts(explained, explain)]


def test_plain_batch_bytes_equal_orjson_of_the_dicts(model_path: Path) -> None:
    features, _ = generate(rows=2000, seed=42, fraud_rate=0.3)
    scores = load_model(model_path, threshold=35).score(features)
    assert len(set(scores.fraud_score.tolist())) > 20  # many distinct fragments in play
    plain = Explain()
    expected = orjson.dumps({"model-version": "v-1", "results": result_dicts(scores, plain)})
    assert batch_body(scores, "v-1", plain) == expected


def test_tied_contributions_keep_the_registry_order() -> None:
    contributions = np.zeros((1, len(FEATURE_NAMES)))
    contributions[0, [4, 9, 20]] = 2.5  # V4, V9 and V20 tie at the top
    contributions[0, [1, 29]] = -1.0  # V1 and Amount tie at the bottom
    scores = Scores(
        values=np.arange(len(FEATURE_NAMES), dtype=float)[None, :],
        probability=np.array([0.1]),
        fraud_score=np.array([10]),
        is_fraud=np.array([False]),
        ood_warning=np.array([False]),
        contributions=contributions,
        baseline=2.5,
    )
    reasons = result_dicts(scores, Explain(True, 30))[0]["reasons"]
    assert [reason["feature"] for reason in reasons[:3]] == ["V4", "V9", "V20"]
    zero_tied = [reason["feature"] for reason in reasons[3:-2]]
    assert zero_tied == [
        name for name in FEATURE_NAMES if name not in ("V4", "V9", "V20", "V1", "Amount")
    ]
    assert [reason["feature"] for reason in reasons[-2:]] == ["V1", "Amount"]
    assert [reason["value"] for reason in reasons[:3]] == [4.0, 9.0, 20.0]
    explain = Explain(True, 4)
    expected = orjson.dumps({"model-version": "v", "results": result_dicts(scores, explain)})
    assert batch_body(scores, "v", explain) == expected


@pytest.mark.parametrize("rows", [1, 15, 16, 500])
def test_top_reasons_are_the_stable_sort_for_every_count(explained: Scores, rows: int) -> None:
    # Ties everywhere: contributions rounded to a few values, so equal maxima are the rule.
    contributions = np.round(explained.contributions[:rows], 0)  # type: ignore[index]
    scores = Scores(
        values=explained.values[:rows],
        probability=explained.probability[:rows],
        fraud_score=explained.fraud_score[:rows],
        is_fraud=explained.is_fraud[:rows],
        ood_warning=explained.ood_warning[:rows],
        contributions=contributions,
        baseline=explained.baseline,
    )
    full_order = np.argsort(-contributions, axis=1, kind="stable")
    for count in range(1, len(FEATURE_NAMES) + 1):
        order, top, values = top_reasons(scores, count)
        assert np.array_equal(order, full_order[:, :count])
        assert np.array_equal(top, np.take_along_axis(contributions, order, axis=1))
        assert np.array_equal(values, np.take_along_axis(scores.values, order, axis=1))


@pytest.mark.parametrize("max_reasons", [1, 3, 30])
def test_a_single_row_has_the_reasons_it_has_in_a_batch(
    explained: Scores, max_reasons: int
) -> None:
    # Ties everywhere (contributions rounded), so the single row's sort must keep registry order.
    contributions = np.round(explained.contributions, 0)  # type: ignore[arg-type]
    batch = dataclasses.replace(explained, contributions=contributions)
    in_batch = reasons_of(batch, max_reasons)
    for row, reasons in enumerate(in_batch):
        alone = dataclasses.replace(
            batch,
            values=batch.values[row : row + 1],
            probability=batch.probability[row : row + 1],
            fraud_score=batch.fraud_score[row : row + 1],
            is_fraud=batch.is_fraud[row : row + 1],
            ood_warning=batch.ood_warning[row : row + 1],
            contributions=contributions[row : row + 1],
        )
        assert reasons_of(alone, max_reasons) == [reasons]
