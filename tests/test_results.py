"""The /v1 renderers: the batch's fragments give the very bytes orjson makes of the result dicts."""

from itertools import pairwise
from pathlib import Path

import numpy as np
import orjson
import pytest

from app.api.inference import Explain
from app.api.results import batch_body, result_dicts
from app.features import FEATURE_NAMES
from app.model import Scores, load_model
from app.synthetic import generate


@pytest.fixture(scope="module")
def explained(model_path: Path) -> Scores:
    features, _ = generate(rows=500, seed=41, fraud_rate=0.3)
    features[7] = features[8]  # a duplicated row
    features[9, 3] = -0.0
    features[10, :] = 0.0  # many features not on any path: tied contributions of 0
    return load_model(model_path).score(features, explain=True)


@pytest.mark.parametrize("max_reasons", [1, 3, 29, 30])
def test_explained_batch_bytes_equal_orjson_of_the_dicts(
    explained: Scores, max_reasons: int
) -> None:
    explain = Explain(True, max_reasons)
    expected = orjson.dumps({"model-version": "v-1", "results": result_dicts(explained, explain)})
    assert batch_body(explained, "v-1", explain) == expected


def test_plain_batch_bytes_equal_orjson_of_the_dicts(model_path: Path) -> None:
    features, _ = generate(rows=2000, seed=42, fraud_rate=0.3)
    scores = load_model(model_path, threshold=35).score(features)
    assert len(set(scores.fraud_score.tolist())) > 20  # many distinct fragments in play
    plain = Explain()
    expected = orjson.dumps({"model-version": "v-1", "results": result_dicts(scores, plain)})
    assert batch_body(scores, "v-1", plain) == expected


def test_tied_contributions_keep_the_registry_order(explained: Scores) -> None:
    reasons = result_dicts(explained, Explain(True, 30))[10]["reasons"]
    contributions = [reason["contribution"] for reason in reasons]
    assert contributions == sorted(contributions, reverse=True)
    ties = 0
    for first, second in pairwise(reasons):
        if first["contribution"] == second["contribution"]:
            ties += 1
            assert FEATURE_NAMES.index(first["feature"]) < FEATURE_NAMES.index(second["feature"])
    assert ties, "the all-zeros row leaves features off every path: tied at 0"
    assert np.isfinite(contributions).all()
