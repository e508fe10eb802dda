"""The scoring interface, its scikit-learn and ONNX Runtime engines, and load_model()."""

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from app.card import read_card
from app.features import FEATURE_NAMES, N_FEATURES, to_model_input

log = logging.getLogger("app.model")

EngineChoice = Literal["auto", "onnx", "sklearn"]
ONNX_TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
OOD_SIGMAS = 3.0
_PARITY_PROBE_ROWS = 4000


class ModelLoadError(Exception):
    """The artifact cannot be served; the message is safe to log (no values, no paths' contents)."""


class Engine(Protocol):
    """What scoring needs from an inference backend."""

    name: str

    def fraud_probability(self, matrix: np.ndarray) -> np.ndarray:
        """P(fraud) for each row of an (n, 30) float32 matrix, as float64."""
        ...


class SklearnEngine:
    """scikit-learn's predict_proba: the reference, and the fallback when ONNX disagrees."""

    name = "sklearn"

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self._fraud_column = list(estimator.classes_).index(1)

    def fraud_probability(self, matrix: np.ndarray) -> np.ndarray:
        probabilities = self.estimator.predict_proba(matrix)
        return np.asarray(probabilities[:, self._fraud_column], dtype=np.float64)


class OnnxEngine:
    """ONNX Runtime, one intra-op thread per session: the workers already fill the cores."""

    name = "onnx"

    def __init__(self, model_bytes: bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] not in (N_FEATURES, None, "N"):
            raise ModelLoadError(f"the ONNX graph does not take one ({N_FEATURES},) float input")
        self._input_name = inputs[0].name
        outputs = [output.name for output in self.session.get_outputs()]
        if "probabilities" not in outputs:
            raise ModelLoadError(
                "the ONNX graph has no 'probabilities' output (export with zipmap off)"
            )
        self._outputs = ["probabilities"]

    def fraud_probability(self, matrix: np.ndarray) -> np.ndarray:
        (probabilities,) = self.session.run(self._outputs, {self._input_name: matrix})
        return np.asarray(probabilities[:, 1], dtype=np.float64)


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


def scores_from_probabilities(probabilities: np.ndarray) -> list[int]:
    """The contract's fraud-score: round(100 × P(fraud)), as Python's round does it."""
    return [round(100.0 * p) for p in probabilities.tolist()]


def parity_probe(card: dict[str, Any] | None, rows: int = _PARITY_PROBE_ROWS) -> np.ndarray:
    """Deterministic rows spread around the training distribution, to compare two engines."""
    rng = np.random.default_rng(20260101)
    mean, std = _feature_moments(card)
    normal = rng.standard_normal((rows, N_FEATURES)) * std * rng.uniform(0.5, 4.0, (rows, 1))
    return to_model_input(normal + mean)


def _feature_moments(card: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    stats = (card or {}).get("feature_stats") or {}
    if set(stats) != set(FEATURE_NAMES):
        return np.zeros(N_FEATURES), np.ones(N_FEATURES)
    mean = np.array([stats[name]["mean"] for name in FEATURE_NAMES], dtype=np.float64)
    std = np.array([stats[name]["std"] for name in FEATURE_NAMES], dtype=np.float64)
    return mean, std


@dataclass(frozen=True)
class Verdict:
    """One transaction's outcome."""

    fraud_score: int
    is_fraud: bool
    ood_warning: bool


@dataclass
class Scorer:
    """A loaded model ready to score: engine, card, digest and the out-of-distribution bounds."""

    engine: Engine
    card: dict[str, Any]
    sha256: str
    version: str
    threshold: float
    path: Path
    estimator: Any = None
    ood_low: np.ndarray | None = field(default=None, repr=False)
    ood_high: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.ood_low is None and set(self.card.get("feature_stats") or {}) == set(FEATURE_NAMES):
            mean, std = _feature_moments(self.card)
            self.ood_low, self.ood_high = mean - OOD_SIGMAS * std, mean + OOD_SIGMAS * std

    def score(self, matrix: np.ndarray) -> list[Verdict]:
        """Verdicts for an (n, 30) float64 matrix of the values as sent, in row order."""
        probabilities = self.engine.fraud_probability(to_model_input(matrix))
        scores = scores_from_probabilities(probabilities)
        ood = self.out_of_distribution(matrix)
        return [
            Verdict(score, score >= self.threshold, warn)
            for score, warn in zip(scores, ood, strict=True)
        ]

    def out_of_distribution(self, matrix: np.ndarray) -> list[bool]:
        """Per row: does any feature lie more than 3 training standard deviations from its mean?"""
        if self.ood_low is None or self.ood_high is None:
            return [False] * len(matrix)
        outside = (matrix < self.ood_low) | (matrix > self.ood_high)
        flags: list[bool] = np.any(outside, axis=1).tolist()
        return flags


def load_model(
    path: Path,
    *,
    engine: EngineChoice = "auto",
    expected_sha256: str = "",
    version: str = "1.0.0",
    threshold: float = 50,
) -> Scorer:
    """Load, verify and probe an artifact; raise ModelLoadError with a loggable reason."""
    if not path.is_file():
        raise ModelLoadError(f"no model file at {path}")
    model_bytes = path.read_bytes()
    digest = hashlib.sha256(model_bytes).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise ModelLoadError(f"SHA-256 of {path.name} differs from MODEL_SHA256; not loaded")
    try:
        card = read_card(path)
    except ValueError as error:
        raise ModelLoadError(f"unreadable model card: {error}") from None
    if card is not None and list(card.get("features") or []) != list(FEATURE_NAMES):
        raise ModelLoadError("the model card's feature list differs from the service's")

    estimator = None
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        if engine == "sklearn":
            raise ModelLoadError("MODEL_ENGINE=sklearn cannot serve an .onnx artifact")
        chosen: Engine = _onnx_engine(model_bytes)
    elif suffix == ".joblib":
        estimator = _unpickle_estimator(model_bytes)
        chosen = _engine_for_estimator(estimator, engine, card)
    else:
        raise ModelLoadError(f"unsupported artifact type {suffix!r}: use .onnx or .joblib")

    _probe_shape(chosen)
    scorer = Scorer(
        engine=chosen,
        card=card or _card_from_estimator(estimator),
        sha256=digest,
        version=version,
        threshold=threshold,
        path=path,
        estimator=estimator,
    )
    if card is None:
        log.warning("no model card beside %s: ood-warning is always false", path.name)
    return scorer


def _onnx_engine(model_bytes: bytes) -> OnnxEngine:
    try:
        return OnnxEngine(model_bytes)
    except ModelLoadError:
        raise
    except Exception as error:  # onnxruntime raises its own types for corrupt graphs
        raise ModelLoadError(f"not a loadable ONNX model ({type(error).__name__})") from None


def _unpickle_estimator(model_bytes: bytes) -> Any:
    import joblib

    try:
        # Loads the bytes that were hashed, so the digest check covers what is unpickled.
        estimator = joblib.load(io.BytesIO(model_bytes))
    except Exception as error:  # a corrupt pickle can raise nearly anything
        raise ModelLoadError(f"not a loadable joblib artifact ({type(error).__name__})") from None
    if not hasattr(estimator, "predict_proba") or not hasattr(estimator, "classes_"):
        raise ModelLoadError("the artifact is not a fitted classifier with predict_proba")
    if getattr(estimator, "n_features_in_", None) != N_FEATURES:
        raise ModelLoadError(f"the model does not take {N_FEATURES} features")
    if sorted(np.asarray(estimator.classes_).tolist()) != [0, 1]:
        raise ModelLoadError("the model's classes are not 0 (legitimate) and 1 (fraud)")
    return estimator


def _engine_for_estimator(estimator: Any, choice: EngineChoice, card: dict | None) -> Engine:
    reference = SklearnEngine(estimator)
    if choice == "sklearn":
        return reference
    try:
        converted = OnnxEngine(to_onnx_bytes(estimator))
    except Exception as error:  # skl2onnx refuses estimators it cannot convert
        if choice == "onnx":
            raise ModelLoadError(f"ONNX conversion failed ({type(error).__name__})") from None
        log.warning("serving with scikit-learn: ONNX conversion failed (%s)", type(error).__name__)
        return reference
    probe = parity_probe(card)
    expected = scores_from_probabilities(reference.fraud_probability(probe))
    actual = scores_from_probabilities(converted.fraud_probability(probe))
    mismatches = sum(a != b for a, b in zip(expected, actual, strict=True))
    if mismatches == 0:
        return converted
    if choice == "onnx":
        raise ModelLoadError(
            f"ONNX conversion disagrees with scikit-learn on {mismatches} probe rows"
        )
    log.warning(
        "serving with scikit-learn: ONNX conversion disagrees on %d of %d probe rows",
        mismatches,
        len(probe),
    )
    return reference


def _probe_shape(engine: Engine) -> None:
    """Score one row now, so a model that cannot answer fails at load and not per request."""
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
    if estimator is not None and hasattr(estimator, "feature_importances_"):
        importances = np.asarray(estimator.feature_importances_, dtype=float).tolist()
        card["feature_importance"] = dict(zip(FEATURE_NAMES, importances, strict=True))
    if estimator is not None and hasattr(estimator, "n_estimators"):
        card["params"] = {"n_estimators": int(estimator.n_estimators)}
    return card
