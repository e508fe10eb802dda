"""`python -m app.train`: data → fit → evaluate on a hold-out → export joblib and ONNX → card."""

import argparse
import hashlib
import io
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from app.card import card_path, write_card
from app.config import os_error_reason
from app.contributions import TREE_PATH, Decomposition
from app.features import FEATURE_NAMES
from app.synthetic import generate

DEFAULT_OUT = Path("model/fraud-model.joblib")
SCORE_BUCKETS = list(range(0, 101, 10))


class DataError(ValueError):
    """The training data cannot be used; the message says why."""


class OutputError(OSError):
    """The artifacts cannot be written where --out says; the message says why."""


def read_data(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels from a CSV or Parquet file of the public data set's columns, every
    cell checked by the request body's rules (app/offline.py); `Class` is the label."""
    # Imported here: pyarrow is an offline requirement, and the image's model stage (serving's
    # venv) trains on generated data without it.
    try:
        from app.offline import OfflineDataError, read_offline
    except ImportError:
        raise DataError(
            "reading a data file needs the offline requirements: "
            "pip install -r requirements-offline.txt"
        ) from None
    try:
        table = read_offline(path, label=True)
    except OfflineDataError as error:
        raise DataError(str(error)) from None
    if len(table.bad):
        raise DataError(table.refusal())
    assert table.labels is not None  # asked for with label=True
    return table.features, table.labels


def train(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    trees: int = 100,
    seed: int = 42,
    threshold: float = 50,
    holdout: float = 0.2,
) -> tuple[Any, dict[str, Any]]:
    """Fit the forest on a stratified split; return it and the card's training sections."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    if np.bincount(labels, minlength=2).min() < 2:
        raise DataError("training needs at least two rows of each class (fraud and legitimate)")
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=holdout, stratify=labels, random_state=seed
    )
    model = RandomForestClassifier(n_estimators=trees, random_state=42, n_jobs=-1)
    model.fit(x_train.astype(np.float32), y_train)
    model.n_jobs = None  # parallel dispatch costs ~20 ms per single-row prediction when serving

    holdout = x_test.astype(np.float32)
    probabilities = model.predict_proba(holdout)[:, 1]
    scores = np.array([round(100.0 * p) for p in probabilities.tolist()])
    flagged = scores >= threshold
    true_positives = int((flagged & (y_test == 1)).sum())
    metrics = {
        "pr_auc": _rounded(average_precision_score(y_test, probabilities)),
        "roc_auc": _rounded(roc_auc_score(y_test, probabilities)),
        "precision": _rounded(true_positives / flagged.sum()) if flagged.any() else 0.0,
        "recall": _rounded(true_positives / (y_test == 1).sum()),
        "threshold": threshold,
        "rows": len(labels),
        "train_rows": len(y_train),
        "holdout_rows": len(y_test),
        "holdout_fraud_rows": int((y_test == 1).sum()),
    }
    counts, _ = np.histogram(scores, bins=SCORE_BUCKETS)
    contributions = Decomposition.of_forest(model).contributions(model.apply(holdout))
    sections = {
        "params": {key: _jsonable(value) for key, value in model.get_params().items()},
        "n_estimators": trees,
        "metrics": metrics,
        "feature_stats": {
            name: {"mean": float(mean), "std": float(std)}
            for name, mean, std in zip(
                FEATURE_NAMES, x_train.mean(axis=0), x_train.std(axis=0), strict=True
            )
        },
        "feature_importance": {
            name: _rounded(value)
            for name, value in zip(FEATURE_NAMES, model.feature_importances_, strict=True)
        },
        "explanation": TREE_PATH,
        # Points each feature moved the hold-out's scores, on average: what the reasons show,
        # where impurity importances count how much the training splits sorted the classes.
        "mean_abs_contribution": {
            name: _rounded(value)
            for name, value in zip(FEATURE_NAMES, np.abs(contributions).mean(axis=0), strict=True)
        },
        "holdout_scores": {
            "mean": float(scores.mean()),
            "std": float(scores.std()),
            "buckets": SCORE_BUCKETS,
            "counts": counts.tolist(),
        },
    }
    return model, sections


def export(
    model: Any, out: Path, *, onnx: bool = True, card: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Write `<stem>.joblib` (and `<stem>.onnx`, with reason codes) atomically; return name →
    size and digest. The card's feature statistics shape the rows the reasons are checked on."""
    import joblib

    from app.conversion import to_served_onnx_bytes
    from app.engines import SklearnEngine

    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    # Only the last suffix changes: `m.v2.joblib` → `m.v2.onnx`, beside `m.v2.card.json`.
    payloads = {out.with_suffix(".joblib"): buffer.getvalue()}
    if onnx:
        payloads[out.with_suffix(".onnx")] = to_served_onnx_bytes(SklearnEngine(model), card)
    artifacts = {}
    for path, payload in payloads.items():
        _write_atomically(path, payload)
        artifacts[path.name] = {
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
    return artifacts


def check_writable(out: Path) -> None:
    """Raise OutputError unless the artifacts can be written beside `out`: found before the
    training, not after it."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(f"cannot write {out}: {os_error_reason(error)}") from None


def _write_atomically(path: Path, payload: bytes) -> None:
    """A server reading the path meanwhile sees the old file or the new one, never half of one."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(payload)
    os.chmod(temporary, 0o644)  # mkstemp makes it private; the server may run as another user
    os.replace(temporary, path)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("scikit-learn", "numpy", "joblib", "skl2onnx", "onnx", "onnxruntime"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def _data_format(path: Path) -> str:
    from app.offline import is_parquet  # read_data has imported it (and pyarrow) already

    return "parquet" if is_parquet(path) else "csv"


def _rounded(value: float) -> float:
    return round(float(value), 6)


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.train", description=__doc__)
    parser.add_argument(
        "--data", type=Path, help="CSV or Parquet with Time, V1..V28, Amount and Class"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="artifact path (.joblib)")
    parser.add_argument("--rows", type=int, default=100_000, help="generated rows (without --data)")
    parser.add_argument(
        "--seed", type=int, default=42, help="seed for generated data and the split"
    )
    parser.add_argument("--trees", type=int, default=100, help="number of trees")
    parser.add_argument("--threshold", type=float, default=50, help="score threshold for metrics")
    parser.add_argument("--no-onnx", action="store_true", help="write only the joblib artifact")
    args = parser.parse_args(argv)
    if args.out.suffix not in (".joblib", ".onnx"):
        parser.error("--out must end in .joblib or .onnx")
    if args.no_onnx and args.out.suffix == ".onnx":
        parser.error("--no-onnx writes no .onnx: give --out a .joblib name")
    if args.rows < 10 or args.trees < 1 or not 0 <= args.threshold <= 100:
        parser.error("--rows must be at least 10, --trees at least 1, --threshold within 0..100")
    return args


def train_and_write(
    features: np.ndarray,
    labels: np.ndarray,
    out: Path,
    *,
    data: dict[str, Any],
    trees: int = 100,
    seed: int = 42,
    threshold: float = 50,
    onnx: bool = True,
) -> dict[str, Any]:
    """Train, export the artifact(s) beside `out` and write the card; return the card."""
    model, sections = train(features, labels, trees=trees, seed=seed, threshold=threshold)
    card: dict[str, Any] = {
        "features": list(FEATURE_NAMES),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "estimator": type(model).__name__,
        "versions": library_versions(),
        "data": {**data, "rows": len(labels), "fraud_rows": int(labels.sum())},
        "split": {"holdout": 0.2, "stratified": True, "random_state": seed},
        **sections,
    }
    try:
        card["artifacts"] = export(model, out, onnx=onnx, card=sections)
        write_card(out, card)
    except OSError as error:  # became unwritable during the training: a full disk, say
        raise OutputError(f"cannot write beside {out}: {os_error_reason(error)}") from None
    return card


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        check_writable(args.out)
        if args.data:
            features, labels = read_data(args.data)
            data: dict[str, Any] = {"source": _data_format(args.data), "file": args.data.name}
        else:
            features, labels = generate(rows=args.rows, seed=args.seed)
            data = {"source": "generated", "seed": args.seed}
        card = train_and_write(
            features,
            labels,
            args.out,
            data=data,
            trees=args.trees,
            seed=args.seed,
            threshold=args.threshold,
            onnx=not args.no_onnx,
        )
    except (DataError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metrics = card["metrics"]
    print(
        f"trained on {card['data']['rows']} rows ({card['data']['fraud_rows']} fraud) in "
        f"{time.perf_counter() - started:.1f} s: PR-AUC {metrics['pr_auc']:.3f}, "
        f"ROC-AUC {metrics['roc_auc']:.3f}, precision {metrics['precision']:.3f} and "
        f"recall {metrics['recall']:.3f} at score >= {args.threshold:g}"
    )
    for name in card["artifacts"]:
        print(f"wrote {args.out.parent / name}")
    print(f"wrote {card_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
