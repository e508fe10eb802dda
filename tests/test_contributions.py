"""Reason codes: exact additivity, agreement with an oracle, the ONNX graph's leaves and split."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper, numpy_helper
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from treeinterpreter import treeinterpreter

from app import conversion
from app.card import card_path
from app.contributions import (
    LEAF_TABLE_OUTPUT,
    LEAVES_OUTPUT,
    REASONS_OUTPUT,
    ReasonsUnavailable,
    node_attributes,
    split,
    tree_regressor,
    with_reasons,
)
from app.engines import (
    LEAF_TABLE_MIN_ROWS,
    Engine,
    ModelLoadError,
    NotExplainable,
    OnnxEngine,
    SklearnEngine,
)
from app.features import FEATURE_NAMES, N_FEATURES, to_model_input
from app.synthetic import generate
from app.train import read_data, train_and_write
from tests.conftest import SAMPLE_CSV, needs_sample
from tests.server import log_records, start_server

ADDITIVITY = 1e-3  # points: the contract's bound
FLOAT32_POINTS = 1e-4  # points: ONNX sums float32 weights
ORACLE = 1e-6  # points


@pytest.fixture(scope="module")
def forest(model_path: Path) -> Any:
    return joblib.load(model_path)


@pytest.fixture(scope="module")
def holdout() -> np.ndarray:
    """The model_dir forest's hold-out: conftest's data, split as app.train splits it."""
    features, labels = generate(rows=30_000, seed=7, fraud_rate=0.01)
    _, x_test, _, _ = train_test_split(
        features, labels, test_size=0.2, stratify=labels, random_state=42
    )
    return to_model_input(x_test)


@pytest.fixture(scope="module")
def engines(forest: Any, model_path: Path) -> dict[str, Engine]:
    return {
        "sklearn": SklearnEngine(forest),
        "onnx": OnnxEngine(model_path.with_suffix(".onnx").read_bytes()),
    }


@pytest.fixture(scope="module")
def sample_rows() -> np.ndarray:
    if not SAMPLE_CSV.is_file():
        pytest.skip(f"{SAMPLE_CSV} is not present")
    return to_model_input(read_data(SAMPLE_CSV)[0])


@pytest.fixture(scope="module")
def sample_model(tmp_path_factory: pytest.TempPathFactory, sample_rows: np.ndarray) -> Path:
    """A 50-tree forest trained on the real 1,000-row sample."""
    features, labels = read_data(SAMPLE_CSV)
    out = tmp_path_factory.mktemp("sample") / "fraud-model.joblib"
    train_and_write(features, labels, out, data={"source": "csv"}, trees=50)
    return out


def sample_engines(sample_model: Path) -> dict[str, Engine]:
    return {
        "sklearn": SklearnEngine(joblib.load(sample_model)),
        "onnx": OnnxEngine(sample_model.with_suffix(".onnx").read_bytes()),
    }


def additivity_error(engine: Engine, rows: np.ndarray) -> float:
    """max |baseline + Σ contributions − 100 P|, P being the engine's own fraud_probability."""
    probability, contributions = engine.explain(rows)
    assert np.array_equal(probability, engine.fraud_probability(rows))
    assert contributions.shape == (len(rows), N_FEATURES)
    assert engine.baseline is not None
    return float(np.abs(engine.baseline + contributions.sum(axis=1) - 100 * probability).max())


@pytest.mark.parametrize("name", ["sklearn", "onnx"])
def test_contributions_add_up_to_the_score_on_the_holdout(
    engines: dict[str, Engine], holdout: np.ndarray, name: str
) -> None:
    engine = engines[name]
    assert engine.explanation == "tree-path"
    assert additivity_error(engine, holdout) <= ADDITIVITY


@needs_sample
@pytest.mark.parametrize("name", ["sklearn", "onnx"])
def test_contributions_add_up_on_the_real_sample(
    sample_model: Path, sample_rows: np.ndarray, name: str
) -> None:
    assert additivity_error(sample_engines(sample_model)[name], sample_rows) <= ADDITIVITY


def oracle(model_path: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """treeinterpreter's fraud-class bias and contributions, in points, on a fresh copy of the
    forest (it normalises the trees' values in place)."""
    _, bias, contributions = treeinterpreter.predict(joblib.load(model_path), rows)
    return 100 * bias[:, 1], 100 * contributions[:, :, 1]


def test_sklearn_contributions_equal_treeinterpreters(
    engines: dict[str, Engine], holdout: np.ndarray, model_path: Path
) -> None:
    bias, expected = oracle(model_path, holdout)
    _, contributions = engines["sklearn"].explain(holdout)
    assert np.abs(bias - engines["sklearn"].baseline).max() <= ORACLE
    assert np.abs(contributions - expected).max() <= ORACLE
    assert np.count_nonzero(np.abs(expected) > 0.1) > len(holdout)  # far from trivially zero


@needs_sample
def test_sklearn_contributions_equal_treeinterpreters_on_the_real_sample(
    sample_model: Path, sample_rows: np.ndarray
) -> None:
    engine = sample_engines(sample_model)["sklearn"]
    bias, expected = oracle(sample_model, sample_rows)
    assert np.abs(bias - engine.baseline).max() <= ORACLE
    assert np.abs(engine.explain(sample_rows)[1] - expected).max() <= ORACLE


def test_onnx_contributions_equal_sklearns(engines: dict[str, Engine], holdout: np.ndarray) -> None:
    expected = engines["sklearn"].explain(holdout)[1]
    assert np.abs(engines["onnx"].explain(holdout)[1] - expected).max() <= FLOAT32_POINTS
    assert engines["onnx"].baseline == engines["sklearn"].baseline


@needs_sample
def test_onnx_contributions_equal_sklearns_on_the_real_sample(
    sample_model: Path, sample_rows: np.ndarray
) -> None:
    by_name = sample_engines(sample_model)
    expected = by_name["sklearn"].explain(sample_rows)[1]
    assert np.abs(by_name["onnx"].explain(sample_rows)[1] - expected).max() <= FLOAT32_POINTS


def test_baseline_is_the_mean_root_fraud_fraction_in_points(
    forest: Any, engines: dict[str, Engine]
) -> None:
    roots = [tree.tree_.value[0, 0] for tree in forest.estimators_]
    expected = 100 * np.mean([root[1] / root.sum() for root in roots])
    assert engines["sklearn"].baseline == pytest.approx(expected, abs=1e-12)


def explain_probability_differences(engine: Engine, rows: np.ndarray) -> int:
    """Rows whose explain P is not bit-identical to the plain P: as one batch, and row by row."""
    plain = engine.fraud_probability(rows)
    batched = int(np.sum(engine.explain(rows)[0] != plain))
    singly = sum(
        int(engine.explain(rows[i : i + 1])[0][0] != plain[i]) for i in range(min(200, len(rows)))
    )
    return batched + singly


def test_explain_probability_is_bit_identical_to_the_plain_one(
    engines: dict[str, Engine], holdout: np.ndarray
) -> None:
    assert explain_probability_differences(engines["onnx"], holdout) == 0
    assert np.count_nonzero(engines["onnx"].fraud_probability(holdout)) > 100


@needs_sample
def test_explain_probability_is_bit_identical_on_the_real_sample(
    engines: dict[str, Engine], sample_model: Path, sample_rows: np.ndarray
) -> None:
    assert explain_probability_differences(engines["onnx"], sample_rows) == 0
    sample_onnx = sample_engines(sample_model)["onnx"]
    assert explain_probability_differences(sample_onnx, sample_rows) == 0


def threshold_rows(forest: Any, classifier: Any, base: np.ndarray) -> np.ndarray:
    """For every split of every tree: a row that reaches it, with the split's feature at the
    graph's float32 threshold and at its two float32 neighbours."""
    attributes = node_attributes(classifier)
    thresholds = {
        (t, n): np.float32(w)
        for t, n, w in zip(
            attributes["nodes_treeids"],
            attributes["nodes_nodeids"],
            attributes["nodes_values"],
            strict=True,
        )
    }
    rows = []
    for number, estimator in enumerate(forest.estimators_):
        tree = estimator.tree_
        stack = [(0, base.copy())]
        while stack:
            node, row = stack.pop()
            if tree.children_left[node] == -1:
                continue
            feature, threshold = tree.feature[node], thresholds[number, node]
            below, above = (
                np.nextafter(threshold, np.float32(bound)) for bound in (-np.inf, np.inf)
            )
            for value in (below, threshold, above):
                rows.append(row.copy())
                rows[-1][feature] = value
            left, right = row.copy(), row.copy()
            left[feature] = min(left[feature], threshold)
            right[feature] = max(right[feature], above)
            stack += [(tree.children_left[node], left), (tree.children_right[node], right)]
    return np.array(rows, dtype=np.float32)


def onnx_leaves(classifier: Any, forest: Any, rows: np.ndarray) -> np.ndarray:
    """The leaf each row reaches in each tree, from a test-only regressor on the classifier's
    own node arrays (app.contributions.tree_regressor) weighted with its leaves' ids."""
    attributes = node_attributes(classifier)
    tree_ids = np.asarray(attributes["class_treeids"])
    node_ids = np.asarray(attributes["class_nodeids"])
    regressor = tree_regressor(
        classifier,
        tree_ids=tree_ids,
        node_ids=node_ids,
        target_ids=tree_ids,
        weights=node_ids.astype(np.float32),  # exact: node ids are far below 2**24
        n_targets=len(forest.estimators_),
        output="leaves",
    )
    graph = helper.make_graph(
        [regressor],
        "leaves",
        [helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [None, N_FEATURES])],
        [helper.make_tensor_value_info("leaves", onnx.TensorProto.FLOAT, [None, None])],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.checker.check_model(model)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (leaves,) = session.run(["leaves"], {"features": rows})
    return leaves.astype(np.int64)


def classifier_node(model_path: Path) -> Any:
    model = onnx.load_model_from_string(split(model_path.with_suffix(".onnx").read_bytes()).plain)
    (node,) = model.graph.node
    return node


def test_onnx_reaches_sklearns_leaves_at_and_beside_every_threshold(
    forest: Any, model_path: Path, holdout: np.ndarray, engines: dict[str, Engine]
) -> None:
    classifier = classifier_node(model_path)
    rows = threshold_rows(forest, classifier, holdout[0])
    assert len(rows) == 3 * sum(
        int((e.tree_.children_left != -1).sum()) for e in forest.estimators_
    )

    assert np.array_equal(onnx_leaves(classifier, forest, rows), forest.apply(rows))
    # The served explain graph on the same edge rows: the classifier's P, scikit-learn's reasons.
    probability, contributions = engines["onnx"].explain(rows)
    assert np.array_equal(probability, engines["onnx"].fraud_probability(rows))
    assert np.abs(contributions - engines["sklearn"].explain(rows)[1]).max() <= FLOAT32_POINTS


def test_the_leaf_table_gives_the_regressors_numbers_to_the_bit(
    forest: Any, model_path: Path, holdout: np.ndarray, engines: dict[str, Engine]
) -> None:
    """Batches are explained from each row's leaves and the leaf table, singles by the
    regressor: the same float32 sums, tree by tree, on the hold-out and at every threshold."""
    engine = engines["onnx"]
    assert isinstance(engine, OnnxEngine)
    assert engine.has_leaf_table
    edges = threshold_rows(forest, classifier_node(model_path), holdout[0])
    for rows in (holdout, edges):
        by_table = engine.reasons_by_leaf_table(rows)
        assert by_table.shape == (len(rows), N_FEATURES + 1)
        assert np.array_equal(by_table, engine.reasons_by_regressor(rows))


@needs_sample
def test_the_leaf_table_gives_the_regressors_numbers_on_the_real_sample(
    sample_model: Path, sample_rows: np.ndarray
) -> None:
    engine = sample_engines(sample_model)["onnx"]
    assert isinstance(engine, OnnxEngine)
    assert engine.has_leaf_table
    assert np.array_equal(
        engine.reasons_by_leaf_table(sample_rows), engine.reasons_by_regressor(sample_rows)
    )


@pytest.mark.parametrize("rows", [1, LEAF_TABLE_MIN_ROWS - 1, LEAF_TABLE_MIN_ROWS, 1000])
def test_batches_from_the_leaf_table_size_up_explain_as_the_regressor_does(
    engines: dict[str, Engine], holdout: np.ndarray, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    engine = engines["onnx"]
    assert isinstance(engine, OnnxEngine)
    batch = holdout[:rows]
    expected = engine.reasons_by_regressor(batch)
    by_table = []
    monkeypatch.setattr(
        engine,
        "reasons_by_leaf_table",
        lambda matrix: (
            by_table.append(len(matrix)) or OnnxEngine.reasons_by_leaf_table(engine, matrix)
        ),
    )

    probability, contributions = engine.explain(batch)

    assert by_table == ([rows] if rows >= LEAF_TABLE_MIN_ROWS else [])
    assert np.array_equal(probability, expected[:, N_FEATURES])
    assert np.array_equal(contributions, expected[:, :N_FEATURES])


def test_threshold_rows_reach_the_split_they_probe(forest: Any, model_path: Path) -> None:
    """The helper above tests what it says: each middle row passes through its split."""
    tree = forest.estimators_[0].tree_
    base = np.zeros(N_FEATURES, dtype=np.float32)
    rows = threshold_rows(forest, classifier_node(model_path), base)
    splits = np.flatnonzero(tree.children_left != -1)
    paths = forest.estimators_[0].decision_path(rows[1 : 3 * len(splits) : 3])
    order = []  # the helper's visiting order: depth first, right child popped first
    stack = [0]
    while stack:
        node = stack.pop()
        if tree.children_left[node] != -1:
            order.append(node)
            stack += [tree.children_left[node], tree.children_right[node]]
    assert all(paths[i, node] for i, node in enumerate(order))


def test_the_served_graph_splits_into_todays_classifier_and_one_regressor(
    forest: Any, model_path: Path, engines: dict[str, Engine]
) -> None:
    graphs = split(model_path.with_suffix(".onnx").read_bytes())
    assert graphs.plain == conversion.to_onnx_bytes(forest)  # today's graph, byte for byte
    plain = onnx.load_model_from_string(graphs.plain)
    assert [node.op_type for node in plain.graph.node] == ["TreeEnsembleClassifier"]
    assert graphs.explain is not None
    explain = onnx.load_model_from_string(graphs.explain)
    assert [node.op_type for node in explain.graph.node] == ["TreeEnsembleRegressor"]
    assert [output.name for output in explain.graph.output] == [REASONS_OUTPUT]
    assert graphs.leaves is not None
    assert graphs.leaf_table is not None
    leaves = onnx.load_model_from_string(graphs.leaves)
    assert [node.op_type for node in leaves.graph.node] == ["TreeEnsembleRegressor"]
    assert [output.name for output in leaves.graph.output] == [LEAVES_OUTPUT]
    table = onnx.load_model_from_string(graphs.leaf_table)
    assert [node.op_type for node in table.graph.node] == ["Constant"]
    table_value = numpy_helper.to_array(table.graph.node[0].attribute[0].t)
    leaf_count = sum(int((e.tree_.children_left == -1).sum()) for e in forest.estimators_)
    assert table_value.shape == (leaf_count, N_FEATURES + 1)
    onnx_engine = engines["onnx"]
    assert isinstance(onnx_engine, OnnxEngine)
    assert [output.name for output in onnx_engine.session.get_outputs()] == [
        "label",
        "probabilities",
    ]
    assert (graphs.explanation, graphs.baseline) == ("tree-path", engines["sklearn"].baseline)


def test_leaves_store_only_their_non_zero_contributions(
    forest: Any, model_path: Path, engines: dict[str, Engine]
) -> None:
    explain = onnx.load_model_from_string(
        split(model_path.with_suffix(".onnx").read_bytes()).explain
    )
    attributes = node_attributes(explain.graph.node[0])
    targets = np.asarray(attributes["target_ids"])
    sklearn_engine = engines["sklearn"]
    assert isinstance(sklearn_engine, SklearnEngine)
    assert sklearn_engine.decomposition is not None
    tables = sklearn_engine.decomposition.tables
    leaves = [np.flatnonzero(e.tree_.children_left == -1) for e in forest.estimators_]
    non_zero = sum(np.count_nonzero(table[ids]) for table, ids in zip(tables, leaves, strict=True))
    assert np.count_nonzero(targets < N_FEATURES) == non_zero
    assert np.count_nonzero(targets == N_FEATURES) == sum(len(ids) for ids in leaves)
    assert non_zero < 0.6 * N_FEATURES * sum(len(ids) for ids in leaves)


def test_an_onnx_without_reasons_scores_but_does_not_explain(
    forest: Any, engines: dict[str, Engine], holdout: np.ndarray
) -> None:
    old = OnnxEngine(conversion.to_onnx_bytes(forest))
    assert (old.explanation, old.baseline) == (None, None)
    assert np.array_equal(
        old.fraud_probability(holdout), engines["onnx"].fraud_probability(holdout)
    )
    with pytest.raises(NotExplainable):
        old.explain(holdout)


def test_a_reasons_graph_without_the_leaf_table_explains_by_the_regressor(
    forest: Any, engines: dict[str, Engine], holdout: np.ndarray
) -> None:
    """A graph trained before the leaf table: the same numbers, by the regressor alone."""
    sklearn_engine = engines["sklearn"]
    assert isinstance(sklearn_engine, SklearnEngine)
    assert sklearn_engine.decomposition is not None
    graph = with_reasons(
        conversion.to_onnx_bytes(forest), sklearn_engine.decomposition, leaf_table=False
    )
    assert (split(graph).leaves, split(graph).leaf_table) == (None, None)
    older = OnnxEngine(graph)
    assert not older.has_leaf_table
    for got, expected in zip(older.explain(holdout), engines["onnx"].explain(holdout), strict=True):
        assert np.array_equal(got, expected)


def test_a_leaf_table_that_differs_from_the_regressor_is_left_out(
    forest: Any,
    model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def tampered(model_bytes: bytes, decomposition: Any, *, leaf_table: bool = True) -> bytes:
        built = with_reasons(model_bytes, decomposition, leaf_table=leaf_table)
        return one_ulp_off_leaf_table(built) if leaf_table else built

    monkeypatch.setattr(conversion, "with_reasons", tampered)
    card = json.loads(card_path(model_path).read_text())

    served = OnnxEngine(conversion.to_served_onnx_bytes(SklearnEngine(forest), card))

    assert served.explanation == "tree-path"
    assert not served.has_leaf_table
    assert "without its leaf table" in caplog.text


def one_ulp_off_leaf_table(built: bytes) -> bytes:
    """The graph with its leaf table's first column one float32 step up: within every
    tolerance, but not the regressor's bits."""
    model = onnx.load_model_from_string(built)
    (constant,) = [n for n in model.graph.node if list(n.output) == [LEAF_TABLE_OUTPUT]]
    table = numpy_helper.to_array(constant.attribute[0].t).copy()
    table[:, 0] = np.nextafter(table[:, 0], np.float32(np.inf))
    constant.attribute[0].t.CopyFrom(numpy_helper.from_array(table, LEAF_TABLE_OUTPUT))
    return bytes(model.SerializeToString())


def test_an_onnx_whose_leaf_table_differs_is_served_without_it(
    model_path: Path,
    engines: dict[str, Engine],
    holdout: np.ndarray,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An .onnx served as it is (not converted here) is checked when it is loaded too."""
    graph = one_ulp_off_leaf_table(model_path.with_suffix(".onnx").read_bytes())

    served = OnnxEngine(graph)

    assert not served.has_leaf_table
    assert "ONNX leaf table left out" in caplog.text
    for got, expected in zip(
        served.explain(holdout), engines["onnx"].explain(holdout), strict=True
    ):
        assert np.array_equal(got, expected)


def test_leaf_indices_outside_the_table_fall_back_to_the_regressor(
    model_path: Path, holdout: np.ndarray
) -> None:
    """Whatever a foreign graph's leaf regressor answers, an explained batch is never a 500."""
    engine = OnnxEngine(model_path.with_suffix(".onnx").read_bytes())
    assert engine.has_leaf_table
    expected = engine.reasons_by_regressor(holdout)

    class OutOfRange:
        def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            (matrix,) = feeds.values()
            return [np.full((len(matrix), 100), 1e9, dtype=np.float32)]

    engine._leaf_session = OutOfRange()
    assert np.array_equal(engine.reasons_by_leaf_table(holdout), expected)


def test_a_reasons_graph_without_its_baseline_is_refused(model_path: Path) -> None:
    model = onnx.load_model_from_string(model_path.with_suffix(".onnx").read_bytes())
    del model.metadata_props[:]
    with pytest.raises(ModelLoadError, match="baseline"):
        OnnxEngine(model.SerializeToString())


def test_a_non_forest_is_served_without_reasons(caplog: pytest.LogCaptureFixture) -> None:
    features, labels = generate(rows=2000, seed=5, fraud_rate=0.1)
    engine = SklearnEngine(GaussianNB().fit(features, labels))
    assert (engine.explanation, engine.baseline) == (None, None)
    with pytest.raises(NotExplainable):
        engine.explain(to_model_input(features[:3]))

    graph = conversion.to_served_onnx_bytes(engine, None)
    assert graph == conversion.to_onnx_bytes(engine.estimator)
    assert "without reason codes: the model is not a random forest" in caplog.text


def test_the_start_commands_conversion_logs_json_like_the_workers(tmp_path: Path) -> None:
    features, labels = generate(rows=2000, seed=5, fraud_rate=0.1)
    joblib.dump(GaussianNB().fit(features, labels), tmp_path / "bayes.joblib")
    server = start_server(tmp_path, workers=1, MODEL_PATH=tmp_path / "bayes.joblib")
    try:
        records = log_records(server)  # every line is JSON: the conversion child's too
    finally:
        server.stop()
    (notice,) = [r for r in records if "without reason codes" in r["message"]]
    assert (notice["logger"], notice["level"]) == ("app.conversion", "warning")


def test_a_graph_of_another_forest_is_refused(forest: Any, engines: dict[str, Engine]) -> None:
    features, labels = generate(rows=5000, seed=8, fraud_rate=0.05)
    other = type(forest)(n_estimators=len(forest.estimators_), random_state=3).fit(features, labels)
    sklearn_engine = engines["sklearn"]
    assert isinstance(sklearn_engine, SklearnEngine)
    assert sklearn_engine.decomposition is not None
    with pytest.raises(ReasonsUnavailable, match="tree 0"):
        with_reasons(conversion.to_onnx_bytes(other), sklearn_engine.decomposition)


def scale_weights(
    targets: Callable[[np.ndarray], np.ndarray], factor: float
) -> Callable[..., bytes]:
    """with_reasons, then the regressor's weights on the selected targets scaled by `factor`."""

    def tampered(model_bytes: bytes, decomposition: Any) -> bytes:
        model = onnx.load_model_from_string(with_reasons(model_bytes, decomposition))
        (regressor,) = [n for n in model.graph.node if list(n.output) == [REASONS_OUTPUT]]
        attribute = next(a for a in regressor.attribute if a.name == "target_weights")
        selected = targets(
            np.asarray(next(a for a in regressor.attribute if a.name == "target_ids").ints)
        )
        weights = np.asarray(attribute.floats, dtype=np.float32)
        weights[selected] *= np.float32(factor)
        del attribute.floats[:]
        attribute.floats.extend(weights.tolist())
        return bytes(model.SerializeToString())

    return tampered


@pytest.mark.parametrize(
    ("targets", "factor", "message"),
    [
        (lambda ids: ids == N_FEATURES, 1.0001, "P(fraud) differs from the classifier's"),
        (lambda ids: ids < N_FEATURES, 1.01, "contributions differ from scikit-learn's"),
    ],
    ids=["probability", "contributions"],
)
def test_a_reasons_graph_that_fails_its_checks_is_not_served(
    forest: Any,
    model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    targets: Callable[[np.ndarray], np.ndarray],
    factor: float,
    message: str,
) -> None:
    monkeypatch.setattr(conversion, "with_reasons", scale_weights(targets, factor))
    card = json.loads(card_path(model_path).read_text())

    graph = conversion.to_served_onnx_bytes(SklearnEngine(forest), card)

    assert graph == conversion.to_onnx_bytes(forest)
    assert message in caplog.text
    assert OnnxEngine(graph).explanation is None


def test_the_cards_mean_absolute_contribution_is_the_holdouts(
    model_path: Path, engines: dict[str, Engine], holdout: np.ndarray
) -> None:
    card = json.loads(card_path(model_path).read_text())
    expected = np.abs(engines["sklearn"].explain(holdout)[1]).mean(axis=0)
    assert card["explanation"] == "tree-path"
    assert list(card["mean_abs_contribution"]) == list(FEATURE_NAMES)
    recorded = np.array(list(card["mean_abs_contribution"].values()))
    assert np.abs(recorded - expected).max() <= 5e-7  # the card rounds to 6 decimals
    assert recorded.sum() > 0.1
