"""python -m app.train: generated data, the real sample, refusal of bad CSVs, and the card."""

import csv
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.card import card_path
from app.features import FEATURE_NAMES
from app.synthetic import TWO_DAYS_SECONDS, generate
from app.train import DataError, read_data
from tests.conftest import SAMPLE_CSV, needs_sample, write_csv
from tests.server import run_in_repo


def run_train(*args: str) -> subprocess.CompletedProcess[str]:
    return run_in_repo(sys.executable, "-m", "app.train", *args, timeout=300)


def test_generated_data_is_shaped_like_the_public_set() -> None:
    features, labels = generate(rows=200_000, seed=42)

    assert features.shape == (200_000, 30)
    assert 0.0012 < labels.mean() < 0.0022  # about 0.17 % fraud
    assert features[:, 0].min() >= 0
    assert features[:, 0].max() <= TWO_DAYS_SECONDS
    assert np.all(np.diff(features[:, 0]) >= 0)  # Time runs forward
    amount = features[:, 29]
    assert amount.min() >= 0
    assert np.median(amount) < amount.mean()
    fraud, normal = features[labels == 1], features[labels == 0]
    shifted = np.abs(fraud[:, 1:29].mean(axis=0) - normal[:, 1:29].mean(axis=0)) > 1.0
    assert 4 <= shifted.sum() < 28  # fraud differs in several components, not all


def test_generated_data_is_deterministic_for_a_seed() -> None:
    first, first_labels = generate(rows=5000, seed=11)
    again, again_labels = generate(rows=5000, seed=11)
    other, _ = generate(rows=5000, seed=12)
    assert np.array_equal(first, again)
    assert np.array_equal(first_labels, again_labels)
    assert not np.array_equal(first, other)


def test_cli_trains_on_generated_data_and_writes_a_card(tmp_path: Path) -> None:
    out = tmp_path / "models" / "fraud-model.joblib"
    result = run_train("--rows", "20000", "--trees", "10", "--out", str(out))

    assert result.returncode == 0, result.stderr
    assert "PR-AUC" in result.stdout
    card = json.loads(card_path(out).read_text())
    for artifact in ("fraud-model.joblib", "fraud-model.onnx"):
        payload = (out.parent / artifact).read_bytes()
        assert card["artifacts"][artifact]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert card["features"] == list(FEATURE_NAMES)
    assert card["params"]["n_estimators"] == 10
    assert card["params"]["random_state"] == 42
    assert card["versions"]["scikit-learn"]
    assert card["versions"]["onnxruntime"]
    assert card["trained_at"].endswith("+00:00")
    assert card["data"] == {
        "source": "generated",
        "seed": 42,
        "rows": 20000,
        "fraud_rows": card["data"]["fraud_rows"],
    }
    metrics = card["metrics"]
    assert set(metrics) >= {"pr_auc", "roc_auc", "precision", "recall", "rows", "threshold"}
    assert 0 <= metrics["pr_auc"] <= 1
    assert 0.5 < metrics["roc_auc"] <= 1
    assert metrics["train_rows"] + metrics["holdout_rows"] == 20000
    assert set(card["feature_stats"]) == set(FEATURE_NAMES)
    assert all(stats["std"] > 0 for stats in card["feature_stats"].values())
    assert sum(card["feature_importance"].values()) == pytest.approx(1, abs=1e-3)
    assert card["explanation"] == "tree-path"
    assert list(card["mean_abs_contribution"]) == list(FEATURE_NAMES)
    assert all(value >= 0 for value in card["mean_abs_contribution"].values())
    assert sum(card["mean_abs_contribution"].values()) > 0
    scores = card["holdout_scores"]
    assert sum(scores["counts"]) == metrics["holdout_rows"]
    assert 0 <= scores["mean"] <= 100


def test_cli_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name / "fraud-model.joblib"
        assert (
            run_train("--rows", "5000", "--trees", "5", "--out", str(out), "--no-onnx").returncode
            == 0
        )
        outputs.append(json.loads(card_path(out).read_text()))
    assert outputs[0]["metrics"] == outputs[1]["metrics"]
    assert outputs[0]["feature_importance"] == outputs[1]["feature_importance"]


@needs_sample
def test_cli_trains_on_the_real_sample(tmp_path: Path) -> None:
    out = tmp_path / "fraud-model.joblib"
    result = run_train("--data", str(SAMPLE_CSV), "--out", str(out))

    assert result.returncode == 0, result.stderr
    card = json.loads(card_path(out).read_text())
    assert card["data"]["source"] == "csv"
    assert card["data"]["rows"] == 1000
    assert card["data"]["fraud_rows"] == 300
    assert card["metrics"]["holdout_fraud_rows"] == 60  # stratified: 20 % of the 300 frauds
    assert card["metrics"]["roc_auc"] > 0.9


def valid_rows(count: int = 20) -> list[list[str]]:
    features, labels = generate(rows=count, seed=1, fraud_rate=0.3)
    return [
        [*map(str, row), str(label)]
        for row, label in zip(features.tolist(), labels.tolist(), strict=True)
    ]


def test_csv_with_quoted_values_is_read(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow([*FEATURE_NAMES, "Class"])
        writer.writerows(valid_rows())
    features, labels = read_data(path)
    assert features.shape == (20, 30)
    assert set(labels.tolist()) <= {0, 1}


def test_csv_missing_columns_is_refused(tmp_path: Path) -> None:
    header = [name for name in FEATURE_NAMES if name not in ("V3", "Amount")] + ["Class"]
    path = write_csv(
        tmp_path / "missing.csv", header, [row[:2] + row[3:29] + row[30:] for row in valid_rows()]
    )

    with pytest.raises(DataError, match="lacks required columns: V3, Amount"):
        read_data(path)
    result = run_train("--data", str(path), "--out", str(tmp_path / "m.joblib"))
    assert result.returncode == 2
    assert "V3, Amount" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m.joblib").exists()


def test_csv_with_non_numeric_value_is_refused(tmp_path: Path) -> None:
    rows = valid_rows()
    rows[4][12] = "twelve"
    path = write_csv(tmp_path / "text.csv", [*FEATURE_NAMES, "Class"], rows)
    with pytest.raises(DataError) as refused:
        read_data(path)
    assert str(refused.value) == (
        "text.csv: 1 of 20 rows break the rules: row 4 (line 6): V12 is not a number"
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda rows: rows.__setitem__(0, [*rows[0][:30], "2"]),
            "row 0 (line 2): Class is not 0 or 1",
        ),
        (
            lambda rows: rows.__setitem__(0, ["nan", *rows[0][1:]]),
            "row 0 (line 2): Time is not a number",
        ),
        (
            lambda rows: rows.__setitem__(3, [*rows[3][:29], "1e999", "0"]),
            "row 3 (line 5): Amount is not finite",
        ),
        (lambda rows: rows.clear(), "bad.csv has no data rows"),
    ],
    ids=["label-2", "nan", "1e999", "empty"],
)
def test_csv_with_bad_values_is_refused(tmp_path: Path, mutate: object, message: str) -> None:
    rows = valid_rows()
    mutate(rows)  # type: ignore[operator]
    path = write_csv(tmp_path / "bad.csv", [*FEATURE_NAMES, "Class"], rows)
    with pytest.raises(DataError, match=re.escape(message)):
        read_data(path)


def test_single_class_data_is_refused(tmp_path: Path) -> None:
    rows = [[*row[:30], "0"] for row in valid_rows()]
    path = write_csv(tmp_path / "one-class.csv", [*FEATURE_NAMES, "Class"], rows)
    result = run_train("--data", str(path), "--out", str(tmp_path / "m.joblib"))
    assert result.returncode == 2
    assert "two rows of each class" in result.stderr


def test_missing_csv_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_train("--data", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "m.joblib"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_an_out_name_with_dots_keeps_them_in_every_artifact(tmp_path: Path) -> None:
    out = tmp_path / "fraud-model.v2.joblib"
    result = run_train("--rows", "2000", "--trees", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    written = {"fraud-model.v2.joblib", "fraud-model.v2.onnx", "fraud-model.v2.card.json"}
    assert {path.name for path in tmp_path.iterdir()} == written
    assert set(json.loads(card_path(out).read_text())["artifacts"]) == written - {
        "fraud-model.v2.card.json"
    }


def test_no_onnx_with_an_onnx_out_is_a_usage_error(tmp_path: Path) -> None:
    result = run_train("--rows", "2000", "--out", str(tmp_path / "m.onnx"), "--no-onnx")
    assert result.returncode == 2
    assert "--no-onnx writes no .onnx" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["/etc/passwd/m.joblib", "/proc/m.joblib"])
def test_an_unwritable_out_is_refused_in_one_line(out: str) -> None:
    result = run_train("--rows", "2000", "--trees", "2", "--out", out)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot write {out}: ")
    assert len(result.stderr.splitlines()) == 1


# The image's model stage trains in serving's venv, which has no offline requirements: a finder
# that refuses them stands in for it (a None in sys.modules would upset scikit-learn's checks).
WITHOUT_OFFLINE_REQUIREMENTS = (
    "import sys\n"
    "class Refuse:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.partition('.')[0] in {'pyarrow', 'tqdm'}:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Refuse())\n"
)


def test_training_on_generated_data_needs_no_offline_requirement(tmp_path: Path) -> None:
    out = tmp_path / "model.joblib"
    code = WITHOUT_OFFLINE_REQUIREMENTS + (
        "import runpy\n"
        f"sys.argv = ['app.train', '--rows', '5000', '--trees', '3', '--out', {str(out)!r}]\n"
        "runpy.run_module('app.train', run_name='__main__', alter_sys=True)\n"
    )
    result = run_in_repo(sys.executable, "-c", code, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.exists()
    assert out.with_suffix(".onnx").exists()


def test_training_on_a_file_without_the_offline_requirements_says_what_to_install(
    tmp_path: Path,
) -> None:
    out = tmp_path / "model.joblib"
    code = WITHOUT_OFFLINE_REQUIREMENTS + (
        "import runpy\n"
        f"sys.argv = ['app.train', '--data', {str(SAMPLE_CSV)!r}, '--out', {str(out)!r}]\n"
        "runpy.run_module('app.train', run_name='__main__', alter_sys=True)\n"
    )
    result = run_in_repo(sys.executable, "-c", code, timeout=300)
    assert result.returncode != 0
    assert "pip install -r requirements-offline.txt" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_the_service_starts_without_the_offline_requirements() -> None:
    code = WITHOUT_OFFLINE_REQUIREMENTS + "import app.main, app.serve, app.featurestore.online\n"
    result = run_in_repo(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
