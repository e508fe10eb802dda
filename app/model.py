"""The loaded model: artifact checks, engine choice, and the Scorer the routes call."""

import hashlib
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.card import feature_moments, read_card
from app.conversion import CONVERSION_DIR_ENV, Conversion, convert, load_verdict
from app.engines import (
    Engine,
    ModelLoadError,
    NotExplainable,
    OnnxEngine,
    SklearnEngine,
    scores_from_probabilities,
)
from app.features import FEATURE_NAMES, N_FEATURES, to_model_input

log = logging.getLogger("app.model")

EngineChoice = Literal["auto", "onnx", "sklearn"]
OOD_SIGMAS = 3.0

__all__ = ["ModelLoadError", "NotExplainable", "Scorer", "Scores", "load_model"]


@dataclass(frozen=True)
class Artifact:
    """An artifact's bytes as read once: what is hashed is what is loaded."""

    payload: bytes
    sha256: str
    card: dict[str, Any] | None


@dataclass(frozen=True)
class Scores:
    """Each row's outcome, as arrays in row order, from one inference call for the whole matrix."""

    values: np.ndarray  # (n, 30) float64: the features as scored (as sent, before the float32 cast)
    probability: np.ndarray  # (n,) float64: P(fraud)
    fraud_score: np.ndarray  # (n,) int64: round(100 × P(fraud))
    is_fraud: np.ndarray  # (n,) bool: fraud_score >= FRAUD_THRESHOLD
    ood_warning: np.ndarray  # (n,) bool
    contributions: np.ndarray | None = None  # (n, 30) float64 points, when explained
    baseline: float | None = None  # points, when explained

    def __len__(self) -> int:
        return len(self.fraud_score)


@dataclass
class Scorer:
    """A model ready to score: engine, card, digest and the out-of-distribution bounds."""

    engine: Engine
    card: dict[str, Any]
    sha256: str
    version: str
    threshold: float
    ood_low: np.ndarray | None = field(default=None, repr=False)
    ood_high: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        mean, std = feature_moments(self.card)
        if mean is not None and std is not None:
            self.ood_low, self.ood_high = mean - OOD_SIGMAS * std, mean + OOD_SIGMAS * std

    @property
    def explains(self) -> bool:
        """Whether this model carries reason codes (an old .onnx may not)."""
        return self.engine.explanation is not None

    def score(self, matrix: np.ndarray, *, explain: bool = False) -> Scores:
        """Scores for an (n, 30) float64 matrix of the values as sent; with `explain`, reasons too.

        Raises NotExplainable when `explain` is asked of a model without reason codes.
        """
        model_input = to_model_input(matrix)
        contributions = None
        if explain:
            probability, contributions = self.engine.explain(model_input)
        else:
            probability = self.engine.fraud_probability(model_input)
        fraud_score = scores_from_probabilities(probability)
        return Scores(
            values=matrix,
            probability=probability,
            fraud_score=fraud_score,
            is_fraud=fraud_score >= self.threshold,
            ood_warning=self.out_of_distribution(matrix),
            contributions=contributions,
            baseline=self.engine.baseline if explain else None,
        )

    def out_of_distribution(self, matrix: np.ndarray) -> np.ndarray:
        """Per row: does any feature lie more than 3 training standard deviations from its mean?"""
        if self.ood_low is None or self.ood_high is None:
            return np.zeros(len(matrix), dtype=bool)
        outside = (matrix < self.ood_low) | (matrix > self.ood_high)
        return np.asarray(np.any(outside, axis=1))


def read_artifact(path: Path, expected_sha256: str = "") -> Artifact:
    """The artifact's bytes, digest-checked, with its card (whose features must be ours)."""
    if not path.is_file():
        raise ModelLoadError(f"no model file at {path}")
    payload = path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise ModelLoadError(f"SHA-256 of {path.name} differs from MODEL_SHA256; not loaded")
    try:
        card = read_card(path)
    except ValueError as error:
        raise ModelLoadError(f"unreadable model card: {error}") from None
    if card is not None and list(card.get("features") or []) != list(FEATURE_NAMES):
        raise ModelLoadError("the model card's feature list differs from the service's")
    return Artifact(payload, digest, card)


def unpickle_estimator(payload: bytes) -> Any:
    """A fitted binary classifier on our 30 features, from joblib bytes."""
    import joblib

    try:
        estimator = joblib.load(io.BytesIO(payload))
    except Exception as error:  # a corrupt pickle can raise nearly anything
        raise ModelLoadError(f"not a loadable joblib artifact ({type(error).__name__})") from None
    if not hasattr(estimator, "predict_proba") or not hasattr(estimator, "classes_"):
        raise ModelLoadError("the artifact is not a fitted classifier with predict_proba")
    if getattr(estimator, "n_features_in_", None) != N_FEATURES:
        raise ModelLoadError(f"the model does not take {N_FEATURES} features")
    if sorted(np.asarray(estimator.classes_).tolist()) != [0, 1]:
        raise ModelLoadError("the model's classes are not 0 (legitimate) and 1 (fraud)")
    return estimator


def load_model(
    path: Path,
    *,
    engine: EngineChoice = "auto",
    expected_sha256: str = "",
    version: str = "1.0.0",
    threshold: float = 50,
) -> Scorer:
    """Load, verify and probe an artifact; raise ModelLoadError with a loggable reason."""
    artifact = read_artifact(path, expected_sha256)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        if engine == "sklearn":
            raise ModelLoadError("MODEL_ENGINE=sklearn cannot serve an .onnx artifact")
        chosen: Engine = OnnxEngine(artifact.payload)
        card = artifact.card
    elif suffix == ".joblib":
        chosen, card = _joblib_engine(artifact, engine)
    else:
        raise ModelLoadError(f"unsupported artifact type {suffix!r}: use .onnx or .joblib")
    _probe(chosen)
    if artifact.card is None:
        log.warning("no model card beside %s: ood-warning is always false", path.name)
    return Scorer(chosen, card or {}, artifact.sha256, version, threshold)


def _joblib_engine(
    artifact: Artifact, choice: EngineChoice
) -> tuple[Engine, dict[str, Any] | None]:
    """The engine for a joblib artifact, using the start command's conversion when it left one."""
    verdict = None
    if choice != "sklearn":
        directory = os.environ.get(CONVERSION_DIR_ENV)
        verdict = load_verdict(Path(directory) if directory else None, artifact.sha256)
    if verdict is not None and verdict.onnx_bytes is not None and artifact.card is not None:
        return OnnxEngine(verdict.onnx_bytes), artifact.card  # no unpickling in this worker
    estimator = unpickle_estimator(artifact.payload)
    card = artifact.card or _card_from_estimator(estimator)
    if choice == "sklearn":
        return SklearnEngine(estimator), card
    conversion = verdict or convert(estimator, artifact.card)
    return _engine_after_conversion(conversion, estimator, choice), card


def _engine_after_conversion(
    conversion: Conversion, estimator: Any, choice: EngineChoice
) -> Engine:
    if conversion.onnx_bytes is not None:
        return OnnxEngine(conversion.onnx_bytes)
    if choice == "onnx":
        raise ModelLoadError(f"MODEL_ENGINE=onnx: {conversion.reason}")
    log.warning("serving with scikit-learn: %s", conversion.reason)
    return SklearnEngine(estimator)


def _probe(engine: Engine) -> None:
    """Score probe rows now, so a model that cannot answer fails at load and not per request."""
    try:
        probabilities = engine.fraud_probability(np.zeros((2, N_FEATURES), dtype=np.float32))
    except Exception as error:
        raise ModelLoadError(
            f"the model cannot score a probe row ({type(error).__name__})"
        ) from None
    if probabilities.shape != (2,) or not np.all((probabilities >= 0) & (probabilities <= 1)):
        raise ModelLoadError("the model's output is not one probability per row")


def _card_from_estimator(estimator: Any) -> dict[str, Any]:
    """A minimal card for an artifact that came without one."""
    card: dict[str, Any] = {"features": list(FEATURE_NAMES)}
    if hasattr(estimator, "feature_importances_"):
        importances = np.asarray(estimator.feature_importances_, dtype=float).tolist()
        card["feature_importance"] = dict(zip(FEATURE_NAMES, importances, strict=True))
    if hasattr(estimator, "n_estimators"):
        card["params"] = {"n_estimators": int(estimator.n_estimators)}
    return card
