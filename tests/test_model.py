"""Loading, engine choice and fallback, ONNX ↔ scikit-learn parity, out-of-distribution bounds."""

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from app import conversion
from app import model as model_module
from app.card import card_path, read_card
from app.contributions import split
from app.engines import NotExplainable, scores_from_probabilities
from app.features import N_FEATURES, to_model_input
from app.model import ModelLoadError, load_model
from app.synthetic import generate
from app.train import read_data
from tests.conftest import SAMPLE_CSV, needs_sample
from tests.server import run_in_repo


def copy_model(model_path: Path, directory: Path, suffix: str = ".joblib") -> Path:
    target = directory / f"fraud-model{suffix}"
    shutil.copy(model_path.with_suffix(suffix), target)
    shutil.copy(card_path(model_path), card_path(target))
    return target


def test_auto_serves_a_joblib_with_onnx(model_path: Path) -> None:
    scorer = load_model(model_path)
    assert scorer.engine.name == "onnx"
    assert scorer.sha256 == hashlib.sha256(model_path.read_bytes()).hexdigest()


def test_sklearn_can_be_forced(model_path: Path) -> None:
    assert load_model(model_path, engine="sklearn").engine.name == "sklearn"


def test_onnx_artifact_is_served_by_onnx_runtime(model_path: Path) -> None:
    scorer = load_model(model_path.with_suffix(".onnx"))
    assert scorer.engine.name == "onnx"
    assert scorer.card["features"] == read_card(model_path)["features"]


def test_onnx_artifact_cannot_be_forced_to_sklearn(model_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="sklearn"):
        load_model(model_path.with_suffix(".onnx"), engine="sklearn")


def test_auto_falls_back_to_sklearn_when_onnx_disagrees(
    model_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    features, labels = generate(rows=3000, seed=99, fraud_rate=0.3)
    disagreeing = RandomForestClassifier(n_estimators=5, random_state=1).fit(features, 1 - labels)
    real_convert = conversion.to_onnx_bytes
    monkeypatch.setattr(conversion, "to_onnx_bytes", lambda _: real_convert(disagreeing))

    scorer = load_model(model_path)

    assert scorer.engine.name == "sklearn"
    assert "disagrees" in caplog.text
    with pytest.raises(ModelLoadError, match="disagrees"):
        load_model(model_path, engine="onnx")


def test_auto_falls_back_when_conversion_fails(
    model_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: Any) -> bytes:
        raise RuntimeError("unsupported")

    monkeypatch.setattr(conversion, "to_onnx_bytes", broken)
    assert load_model(model_path).engine.name == "sklearn"
    assert "conversion failed" in caplog.text


def parity(model_path: Path, rows: np.ndarray) -> tuple[float, int]:
    reference = load_model(model_path, engine="sklearn").engine
    converted = load_model(model_path.with_suffix(".onnx")).engine
    matrix = to_model_input(rows)
    expected, actual = reference.fraud_probability(matrix), converted.fraud_probability(matrix)
    changed = sum(
        a != b
        for a, b in zip(
            scores_from_probabilities(expected), scores_from_probabilities(actual), strict=True
        )
    )
    return float(np.max(np.abs(expected - actual))), changed


def test_onnx_matches_sklearn_on_generated_rows(model_path: Path) -> None:
    rows, _ = generate(rows=10_000, seed=123, fraud_rate=0.05)
    max_delta, changed_scores = parity(model_path, rows)
    assert max_delta < 1e-5
    assert changed_scores == 0


@needs_sample
def test_onnx_matches_sklearn_on_the_real_sample(model_path: Path, tmp_path: Path) -> None:
    from app.train import train_and_write

    features, labels = read_data(SAMPLE_CSV)
    real_model = tmp_path / "fraud-model.joblib"
    train_and_write(features, labels, real_model, data={"source": "csv"}, trees=50)
    for artifact, rows in ((real_model, features), (model_path, features)):
        max_delta, changed_scores = parity(artifact, rows)
        assert max_delta < 1e-5
        assert changed_scores == 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no model file"):
        load_model(tmp_path / "nothing.joblib")


@pytest.mark.parametrize("suffix", [".joblib", ".onnx"])
def test_corrupt_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"fraud-model{suffix}"
    path.write_bytes(b"\x80\x04garbage" * 100)
    with pytest.raises(ModelLoadError, match="not a loadable"):
        load_model(path)


def test_wrong_number_of_features(tmp_path: Path) -> None:
    path = tmp_path / "narrow.joblib"
    features, labels = generate(rows=500, seed=5, fraud_rate=0.2)
    joblib.dump(RandomForestClassifier(n_estimators=3).fit(features[:, :5], labels), path)
    with pytest.raises(ModelLoadError, match="30 features"):
        load_model(path)


def test_not_a_classifier(tmp_path: Path) -> None:
    path = tmp_path / "dict.joblib"
    joblib.dump({"weights": [1, 2, 3]}, path)
    with pytest.raises(ModelLoadError, match="not a fitted classifier"):
        load_model(path)


def test_card_with_other_features_is_refused(model_path: Path, tmp_path: Path) -> None:
    target = copy_model(model_path, tmp_path)
    card = card_path(target)
    card.write_text(card.read_text().replace('"Amount"', '"amount"'))
    with pytest.raises(ModelLoadError, match="feature list"):
        load_model(target)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"trained_at": 1234567890}, "trained_at"),
        ({"metrics": {"rows": "many"}}, "metrics.rows"),
        ({"metrics": [0.9]}, "metrics"),
        ({"feature_importance": {"V1": "high"}}, "feature_importance.V1"),
        ({"feature_stats": {"V1": {"mean": "x", "std": 1.0}}}, "feature_stats.V1"),
        ({"feature_stats": {"V1": {"mean": 0.0, "std": -1.0}}}, "feature_stats.V1"),
        ({"holdout_scores": {"mean": "low"}}, "holdout_scores.mean"),
        ({"versions": "1.9"}, "versions"),
    ],
)
def test_a_card_not_as_training_writes_it_is_refused_naming_the_field(
    model_path: Path, tmp_path: Path, edit: dict[str, Any], named: str
) -> None:
    """Found at load (503, one log line), not by a 500 from /v1/model-info or a worker that dies
    computing the out-of-distribution bounds."""
    target = copy_model(model_path, tmp_path)
    card = json.loads(card_path(target).read_text())
    for name, value in edit.items():
        card[name] = {**card[name], **value} if name == "feature_stats" else value
    card_path(target).write_text(json.dumps(card))

    with pytest.raises(ModelLoadError, match="model card") as refused:
        load_model(target)
    assert named in str(refused.value)
    for value in ("1234567890", "many", "high", "low", "1.9", "'x'"):
        assert value not in str(refused.value)


def test_a_card_with_fields_the_service_does_not_read_is_served(
    model_path: Path, tmp_path: Path
) -> None:
    target = copy_model(model_path, tmp_path)
    card = json.loads(card_path(target).read_text())
    card_path(target).write_text(json.dumps({**card, "owner": {"team": 7}, "notes": [1, "a"]}))
    assert load_model(target).card["owner"] == {"team": 7}


def test_unsupported_suffix(model_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "fraud-model.pkl"
    shutil.copy(model_path, target)
    with pytest.raises(ModelLoadError, match="unsupported"):
        load_model(target)


def test_digest_pin(model_path: Path) -> None:
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert load_model(model_path, expected_sha256=digest).sha256 == digest
    with pytest.raises(ModelLoadError, match="MODEL_SHA256"):
        load_model(model_path, expected_sha256="0" * 64)


def test_artifact_without_card_is_served_without_ood(tmp_path: Path) -> None:
    path = tmp_path / "bare.joblib"
    features, labels = generate(rows=2000, seed=5, fraud_rate=0.1)
    joblib.dump(RandomForestClassifier(n_estimators=5, random_state=0).fit(features, labels), path)

    scorer = load_model(path)

    far_out = np.full((1, N_FEATURES), 1e9)
    assert scorer.out_of_distribution(far_out).tolist() == [False]
    assert set(scorer.card["feature_importance"]) == set(read_card_features())


def read_card_features() -> list[str]:
    from app.features import FEATURE_NAMES

    return list(FEATURE_NAMES)


def test_out_of_distribution_is_per_row(model_path: Path) -> None:
    scorer = load_model(model_path)
    stats = scorer.card["feature_stats"]
    means = np.array([[value["mean"] for value in stats.values()]] * 3)
    means[1, 29] = stats["Amount"]["mean"] + 3.5 * stats["Amount"]["std"]
    means[2, 0] = stats["Time"]["mean"] - 3.5 * stats["Time"]["std"]
    assert scorer.out_of_distribution(means).tolist() == [False, True, True]


def test_scores_use_pythons_round() -> None:
    probabilities = np.array([0.0, 0.004, 0.005, 0.125, 0.994, 0.996, 1.0])
    assert scores_from_probabilities(probabilities).tolist() == [0, 0, 0, 12, 99, 100, 100]


def test_vectorised_scores_equal_pythons_round_on_every_half_and_its_neighbours() -> None:
    halves = np.arange(0, 201) / 200  # 100 × p lands on every .0 and .5 (as near as doubles go)
    probabilities = np.concatenate(
        [
            halves,
            np.nextafter(halves, 0),
            np.nextafter(halves, 1),
            np.random.default_rng(3).random(10_000),
        ]
    ).clip(0, 1)
    expected = [round(100.0 * p) for p in probabilities.tolist()]
    assert scores_from_probabilities(probabilities).tolist() == expected


def test_workers_use_the_start_commands_conversion_without_unpickling(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversion.convert_for_workers(model_path, "", tmp_path)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert (tmp_path / f"{digest}.onnx").is_file()

    def no_unpickling(_: bytes) -> None:
        raise AssertionError("a worker unpickled the artifact")

    monkeypatch.setenv(conversion.CONVERSION_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(model_module, "unpickle_estimator", no_unpickling)
    scorer = load_model(model_path)
    assert scorer.engine.name == "onnx"
    assert scorer.sha256 == digest
    assert scorer.engine.explanation == "tree-path"  # the verdict's graph carries the reasons


def test_start_commands_fallback_verdict_is_followed(
    model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    conversion.save_verdict(tmp_path, digest, conversion.Conversion(None, "disagrees on 3 rows"))
    monkeypatch.setenv(conversion.CONVERSION_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(conversion, "to_onnx_bytes", lambda _: pytest.fail("converted again"))

    assert load_model(model_path).engine.name == "sklearn"
    assert "disagrees on 3 rows" in caplog.text
    with pytest.raises(ModelLoadError, match="disagrees on 3 rows"):
        load_model(model_path, engine="onnx")


def test_no_verdict_for_an_artifact_that_fails_its_digest(model_path: Path, tmp_path: Path) -> None:
    conversion.convert_for_workers(model_path, "0" * 64, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_verdict_for_another_artifact_is_ignored(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversion.save_verdict(tmp_path, "f" * 64, conversion.Conversion(None, "not this one"))
    monkeypatch.setenv(conversion.CONVERSION_DIR_ENV, str(tmp_path))
    assert load_model(model_path).engine.name == "onnx"


def test_every_engine_serves_reason_codes_with_one_baseline(model_path: Path) -> None:
    engines = [
        load_model(model_path.with_suffix(".onnx")).engine,
        load_model(model_path).engine,  # converted in-process
        load_model(model_path, engine="sklearn").engine,
    ]
    assert [engine.name for engine in engines] == ["onnx", "onnx", "sklearn"]
    assert {engine.explanation for engine in engines} == {"tree-path"}
    (baseline,) = {engine.baseline for engine in engines}
    assert baseline is not None
    assert 0 < baseline < 100


def test_an_onnx_without_reasons_is_served_without_them(model_path: Path, tmp_path: Path) -> None:
    """An .onnx trained before reason codes: its classifier graph alone, beside its card."""
    target = copy_model(model_path, tmp_path, ".onnx")
    target.write_bytes(split(target.read_bytes()).plain)
    rows = to_model_input(generate(rows=500, seed=3, fraud_rate=0.2)[0])

    old = load_model(target).engine
    assert (old.name, old.explanation, old.baseline) == ("onnx", None, None)
    with pytest.raises(NotExplainable):
        old.explain(rows)
    current = load_model(model_path.with_suffix(".onnx")).engine
    assert np.array_equal(old.fraud_probability(rows), current.fraud_probability(rows))


def test_explaining_with_an_onnx_imports_neither_scikit_learn_nor_onnx(model_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; import numpy as np\n"
        "from app.model import load_model\n"
        f"engine = load_model(Path({str(model_path.with_suffix('.onnx'))!r})).engine\n"
        "engine.explain(np.zeros((2, 30), dtype=np.float32))\n"
        "print(engine.explanation, sorted({'sklearn', 'skl2onnx', 'onnx'} & set(sys.modules)))\n"
    )
    result = run_in_repo(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tree-path []"
