"""Inference backends behind one small interface: scikit-learn (the reference) and ONNX Runtime."""

import logging
from typing import Any, Protocol

import numpy as np

from app.contributions import (
    LEAF_TABLE_OUTPUT,
    LEAVES_OUTPUT,
    REASONS_OUTPUT,
    REASONS_TARGETS,
    TREE_PATH,
    Decomposition,
    ReasonsUnavailable,
    split,
)
from app.features import N_FEATURES

log = logging.getLogger("app.engines")


class ModelLoadError(Exception):
    """The artifact cannot be served; the message is safe to log (no values, no secrets)."""


class NotExplainable(Exception):
    """The served model carries no reason codes (an .onnx exported without the explain graph)."""


class Engine(Protocol):
    """What scoring needs from an inference backend."""

    name: str
    explanation: str | None
    """The explanation method served ("tree-path"), or None when this model has no reason codes."""
    baseline: float | None
    """The forest's mean root fraud fraction × 100: the score before any split, or None."""

    def fraud_probability(self, matrix: np.ndarray) -> np.ndarray:
        """P(fraud) for each row of an (n, 30) float32 matrix, as float64."""
        ...

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(fraud) as float64 (n,) and each feature's contribution in points, float64 (n, 30).

        baseline + contributions.sum(axis=1) == 100 × P(fraud) within 1e-3, and P(fraud) is exactly
        what fraud_probability() returns for the same rows. Raises NotExplainable without reasons.
        """
        ...


class SklearnEngine:
    """scikit-learn's predict_proba: the reference, and the fallback when ONNX disagrees."""

    name = "sklearn"

    def __init__(self, estimator: Any) -> None:
        if hasattr(estimator, "n_jobs"):
            # Parallel dispatch costs ~20 ms per single-row prediction (PERF-NOTES).
            estimator.n_jobs = None
        self.estimator = estimator
        self._fraud_column = list(estimator.classes_).index(1)
        try:
            self.decomposition: Decomposition | None = Decomposition.of_forest(estimator)
        except ReasonsUnavailable:
            self.decomposition = None
        self.explanation = None if self.decomposition is None else TREE_PATH
        self.baseline = None if self.decomposition is None else self.decomposition.baseline

    def fraud_probability(self, matrix: np.ndarray) -> np.ndarray:
        probabilities = self.estimator.predict_proba(matrix)
        return np.asarray(probabilities[:, self._fraud_column], dtype=np.float64)

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.decomposition is None:
            raise NotExplainable
        leaves = self.estimator.apply(matrix)
        return self.fraud_probability(matrix), self.decomposition.contributions(leaves)


# From this many rows, the leaf table's sparse product explains faster than the regressor; below
# it, the product's fixed cost (~50 µs) is more than the regressor's weights.
LEAF_TABLE_MIN_ROWS = 64
LEAF_TABLE_CHECK_ROWS = 256


class OnnxEngine:
    """ONNX Runtime, one intra-op thread per session: the workers already fill the cores.

    Two sessions when the graph carries reason codes: the classifier alone for plain scoring, and
    the reasons regressor, whose one traversal gives the contributions and the same P(fraud).
    A graph with the leaf table explains batches through a third: each row's leaves, whose rows
    of the table one sparse product sums (the same bits as the regressor's, app.contributions).
    """

    name = "onnx"

    def __init__(self, model_bytes: bytes) -> None:
        try:
            graphs = split(model_bytes)
        except ValueError as error:
            raise ModelLoadError(f"not a loadable ONNX model ({error})") from None
        self.session = _session(graphs.plain)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] not in (N_FEATURES, None, "N"):
            raise ModelLoadError(f"the ONNX graph does not take one ({N_FEATURES},) float input")
        self._input_name = inputs[0].name
        if "probabilities" not in [output.name for output in self.session.get_outputs()]:
            raise ModelLoadError(
                "the ONNX graph has no 'probabilities' output (export with zipmap off)"
            )
        self._outputs = ["probabilities"]
        self._explain_session = None if graphs.explain is None else _session(graphs.explain)
        if self._explain_session is not None:
            outputs = [(o.name, o.shape[-1]) for o in self._explain_session.get_outputs()]
            if outputs != [(REASONS_OUTPUT, REASONS_TARGETS)]:
                raise ModelLoadError(f"the ONNX explain graph does not output {REASONS_OUTPUT}")
        self._leaf_session, self._leaf_table = None, None
        if self._explain_session is not None and graphs.leaves and graphs.leaf_table:
            # Imported now, not in the first explained batch (~0.3 s), and only with a table.
            from scipy.sparse import csr_array

            self._csr_array = csr_array
            self._leaf_session = _session(graphs.leaves)
            self._leaf_table = self._constant(_session(graphs.leaf_table), LEAF_TABLE_OUTPUT)
            if self._leaf_table.ndim != 2 or self._leaf_table.shape[1] != REASONS_TARGETS:
                raise ModelLoadError(f"the ONNX leaf table is not ({REASONS_TARGETS},) per leaf")
            if not self._leaf_table_agrees():
                # Checked at conversion already; an .onnx from elsewhere is checked here too.
                log.warning("ONNX leaf table left out: its sums differ from the regressor's")
                self._leaf_session = self._leaf_table = None
        self.explanation = graphs.explanation
        self.baseline = graphs.baseline

    def fraud_probability(self, matrix: np.ndarray) -> np.ndarray:
        (probabilities,) = self.session.run(self._outputs, {self._input_name: matrix})
        return np.asarray(probabilities[:, 1], dtype=np.float64)

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._leaf_session is not None and len(matrix) >= LEAF_TABLE_MIN_ROWS:
            reasons = self.reasons_by_leaf_table(matrix)
        else:
            reasons = self.reasons_by_regressor(matrix)
        return (
            np.asarray(reasons[:, N_FEATURES], dtype=np.float64),
            np.asarray(reasons[:, :N_FEATURES], dtype=np.float64),
        )

    @property
    def has_leaf_table(self) -> bool:
        return self._leaf_session is not None

    def reasons_by_regressor(self, matrix: np.ndarray) -> np.ndarray:
        """The graph's `reasons`, (n, 31) float32: contributions, then P(fraud)."""
        if self._explain_session is None:
            raise NotExplainable
        (reasons,) = self._explain_session.run([REASONS_OUTPUT], {self._input_name: matrix})
        return np.asarray(reasons)

    def reasons_by_leaf_table(self, matrix: np.ndarray) -> np.ndarray:
        """The same (n, 31) from each row's leaves: the sum of their rows of the leaf table."""
        if self._leaf_session is None or self._leaf_table is None:
            raise NotExplainable
        (leaves,) = self._leaf_session.run([LEAVES_OUTPUT], {self._input_name: matrix})
        rows, trees = leaves.shape
        columns = leaves.astype(np.int64).ravel()
        if columns.size and not 0 <= columns.min() <= columns.max() < len(self._leaf_table):
            return self.reasons_by_regressor(matrix)  # a graph not built here: never a 500
        # A row's leaves are its non-zeros, in ascending columns: CSR sums them in that order.
        paths = self._csr_array(
            (
                np.ones(rows * trees, dtype=np.float32),
                columns,
                np.arange(0, rows * trees + 1, trees),
            ),
            shape=(rows, len(self._leaf_table)),
        )
        return np.asarray(paths @ self._leaf_table)

    def _leaf_table_agrees(self) -> bool:
        """The leaf table's sums are the regressor's, bit for bit, on rows of every scale."""
        rng = np.random.default_rng(20261203)
        spread = 10.0 ** rng.uniform(-1, 5, (LEAF_TABLE_CHECK_ROWS, 1))
        rows = (rng.standard_normal((LEAF_TABLE_CHECK_ROWS, N_FEATURES)) * spread).astype(
            np.float32
        )
        return np.array_equal(self.reasons_by_leaf_table(rows), self.reasons_by_regressor(rows))

    def _constant(self, session: Any, output: str) -> np.ndarray:
        """A graph's constant output (it takes no data: an empty batch is fed for the input)."""
        empty = np.empty((0, N_FEATURES), dtype=np.float32)
        (value,) = session.run([output], {self._input_name: empty})
        return np.ascontiguousarray(value, dtype=np.float32)


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own types for corrupt graphs
        raise ModelLoadError(f"not a loadable ONNX model ({type(error).__name__})") from None


def scores_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """The contract's fraud-score, round(100 × P(fraud)), as int64.

    np.rint rounds half to even on the same double as Python's round(): the same integers.
    """
    return np.rint(100.0 * np.asarray(probabilities, dtype=np.float64)).astype(np.int64)
