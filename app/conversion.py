"""A fitted forest → ONNX, kept only if it gives scikit-learn's integer scores on a probe set.

The graph carries the reason-code regressor (app.contributions) when its explanations check out
on the probe set too: the same P(fraud) to the bit, scikit-learn's contributions, additivity; and
its leaf table (for batches) when that gives the regressor's numbers to the bit, else without it.

The start command runs it once, in a short-lived child process, and leaves the verdict for the
workers (keyed by the artifact's SHA-256): workers then load the graph without unpickling the
artifact or importing scikit-learn and skl2onnx, which would cost each of them ~120 MiB.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.card import feature_moments
from app.contributions import ReasonsUnavailable, with_reasons
from app.engines import ModelLoadError, OnnxEngine, SklearnEngine, scores_from_probabilities
from app.features import N_FEATURES, to_model_input

log = logging.getLogger("app.conversion")

ONNX_TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
CONVERSION_DIR_ENV = "FRAUD_CONVERSION_DIR"
PARITY_PROBE_ROWS = 4000
SINGLE_ROW_PROBES = 64  # ONNX Runtime takes another code path for one row: check it too
REASONS_TOLERANCE = 1e-3  # points: the contract's additivity bound


@dataclass(frozen=True)
class Conversion:
    """The converted graph when it agrees with scikit-learn; else None and why not."""

    onnx_bytes: bytes | None
    reason: str = ""


def to_onnx_bytes(estimator: Any) -> bytes:
    """Convert a fitted forest to ONNX: probabilities as a plain tensor (zipmap off)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
        target_opset=ONNX_TARGET_OPSET,
        options={id(estimator): {"zipmap": False}},
    )
    return onnx_model.SerializeToString()


def parity_probe(card: dict[str, Any] | None, rows: int = PARITY_PROBE_ROWS) -> np.ndarray:
    """Deterministic rows spread around the training distribution and well beyond it."""
    rng = np.random.default_rng(20260101)
    mean, std = feature_moments(card)
    if mean is None or std is None:
        mean, std = np.zeros(N_FEATURES), np.ones(N_FEATURES)
    spread = rng.uniform(0.5, 4.0, (rows, 1))
    return to_model_input(mean + rng.standard_normal((rows, N_FEATURES)) * std * spread)


def to_served_onnx_bytes(reference: SklearnEngine, card: dict[str, Any] | None) -> bytes:
    """The graph to serve: the classifier, with the reasons regressor unless it fails its checks
    (then without it, logged: the model is served without reason codes)."""
    onnx_bytes = to_onnx_bytes(reference.estimator)
    try:
        return explained_graph(reference, onnx_bytes, parity_probe(card))
    except Exception as error:  # reason codes are an addition: never lose the ONNX path to them
        why = str(error) if isinstance(error, ReasonsUnavailable) else type(error).__name__
        log.warning("ONNX graph without reason codes: %s", why)
        return onnx_bytes


def explained_graph(reference: SklearnEngine, onnx_bytes: bytes, probe: np.ndarray) -> bytes:
    """The classifier graph plus the reasons regressor, checked on the probe rows against the
    classifier and scikit-learn; raises ReasonsUnavailable saying which check failed."""
    if reference.decomposition is None:
        raise ReasonsUnavailable("the model is not a random forest")
    augmented = with_reasons(onnx_bytes, reference.decomposition)
    try:
        served = OnnxEngine(augmented)
    except ModelLoadError as error:
        raise ReasonsUnavailable(str(error)) from None
    reasons = served.reasons_by_regressor(probe)
    singles = [probe[i : i + 1] for i in range(min(SINGLE_ROW_PROBES, len(probe)))]
    explained = [(probe, reasons), *((row, served.reasons_by_regressor(row)) for row in singles)]
    for rows, of_rows in explained:
        if not np.array_equal(of_rows[:, N_FEATURES], served.fraud_probability(rows)):
            raise ReasonsUnavailable("the reasons graph's P(fraud) differs from the classifier's")
    probability = reasons[:, N_FEATURES].astype(np.float64)
    contributions = reasons[:, :N_FEATURES].astype(np.float64)
    if np.abs(contributions - reference.explain(probe)[1]).max() > REASONS_TOLERANCE:
        raise ReasonsUnavailable("the reasons graph's contributions differ from scikit-learn's")
    additivity = reference.decomposition.baseline + contributions.sum(axis=1) - 100 * probability
    if np.abs(additivity).max() > REASONS_TOLERANCE:
        raise ReasonsUnavailable("the reasons graph's contributions do not add up to the score")
    if not served.has_leaf_table or not np.array_equal(
        served.reasons_by_leaf_table(probe), reasons
    ):
        # The regressor is right, and serves alone: batches are explained a little slower.
        log.warning("ONNX graph without its leaf table: its sums differ from the regressor's")
        return with_reasons(onnx_bytes, reference.decomposition, leaf_table=False)
    return augmented


def convert(estimator: Any, card: dict[str, Any] | None) -> Conversion:
    """Convert and compare integer scores with scikit-learn; never raises."""
    reference = SklearnEngine(estimator)
    try:
        onnx_bytes = to_served_onnx_bytes(reference, card)
        converted = OnnxEngine(onnx_bytes)
    except Exception as error:  # skl2onnx refuses estimators it cannot convert
        return Conversion(None, f"ONNX conversion failed ({type(error).__name__})")
    probe = parity_probe(card)
    expected = scores_from_probabilities(reference.fraud_probability(probe))
    actual = scores_from_probabilities(converted.fraud_probability(probe))
    mismatches = sum(a != b for a, b in zip(expected, actual, strict=True))
    if mismatches:
        disagreement = f"{mismatches} of {len(probe)} probe rows"
        return Conversion(None, f"ONNX conversion disagrees with scikit-learn on {disagreement}")
    return Conversion(onnx_bytes)


def save_verdict(directory: Path, sha256: str, conversion: Conversion) -> None:
    if conversion.onnx_bytes is not None:
        (directory / f"{sha256}.onnx").write_bytes(conversion.onnx_bytes)
    verdict = {"onnx": conversion.onnx_bytes is not None, "reason": conversion.reason}
    (directory / f"{sha256}.json").write_text(json.dumps(verdict))


def load_verdict(directory: Path | None, sha256: str) -> Conversion | None:
    """The start command's verdict on this artifact, or None when it left none."""
    if directory is None:
        return None
    try:
        verdict = json.loads((directory / f"{sha256}.json").read_text())
        onnx_bytes = (directory / f"{sha256}.onnx").read_bytes() if verdict["onnx"] else None
    except (OSError, ValueError, KeyError):
        return None
    return Conversion(onnx_bytes, str(verdict.get("reason", "")))


def convert_for_workers(model_path: Path, expected_sha256: str, directory: Path) -> None:
    """Child-process entry point: load and convert once, leave the verdict in `directory`.

    Any failure here leaves no verdict; each worker then loads the artifact itself and reports
    the problem the way it always does (503 and a log line).
    """
    from app.model import ModelLoadError, read_artifact, unpickle_estimator

    try:
        artifact = read_artifact(model_path, expected_sha256)
        estimator = unpickle_estimator(artifact.payload)
    except ModelLoadError:
        return
    save_verdict(directory, artifact.sha256, convert(estimator, artifact.card))


def convert_in_child(model_path: Path, expected_sha256: str, directory: Path) -> None:
    """convert_for_workers() as the start command's spawned child runs it: its log lines are
    JSON like the workers' (a spawned interpreter has no logging set up)."""
    from app.logs import configure_unless_configured

    configure_unless_configured()
    convert_for_workers(model_path, expected_sha256, directory)
