"""Reason codes: a forest's tree-path decomposition and the ONNX graph that serves it."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app import protowire
from app.features import N_FEATURES

TREE_PATH = "tree-path"
REASONS_OUTPUT = "reasons"
"""(n, 31) float32: the 30 contributions in points, then P(fraud) from the same traversal."""
REASONS_TARGETS = N_FEATURES + 1
LEAVES_OUTPUT = "leaves"
"""(n, n_trees) float32: per tree, the leaf each row reaches, as its row of the leaf table."""
LEAF_TABLE_OUTPUT = "leaf_reasons"
"""(leaves, 31) float32, a constant: each leaf's row of `reasons` (its weights, dense)."""
EXPLANATION_KEY = "fraud.explanation"
BASELINE_KEY = "fraud.baseline"

_CLASSIFIER = "TreeEnsembleClassifier"
_REGRESSOR = "TreeEnsembleRegressor"
_LEAF = -1  # scikit-learn's children_left of a leaf


class ReasonsUnavailable(Exception):
    """This forest or graph cannot carry reason codes; the message says why (no values)."""


@dataclass(frozen=True)
class Decomposition:
    """Each node's path contributions, per tree, in fraud-score points already divided by the
    number of trees: a row's contributions are the sum of its leaves' rows."""

    baseline: float
    """The forest's mean root fraud fraction × 100."""
    trees: tuple[Any, ...]
    """The fitted trees' `tree_` structures, kept to check a graph against them."""
    tables: tuple[np.ndarray, ...]

    @classmethod
    def of_forest(cls, forest: Any) -> "Decomposition":
        """The decomposition of a fitted binary random forest (or extra-trees) classifier."""
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

        if not isinstance(forest, RandomForestClassifier | ExtraTreesClassifier):
            raise ReasonsUnavailable(f"{type(forest).__name__} is not a random forest classifier")
        fraud = list(forest.classes_).index(1)
        trees = tuple(estimator.tree_ for estimator in forest.estimators_)
        fractions = [fraud_fractions(tree, fraud) for tree in trees]
        points_per_tree = 100.0 / len(trees)
        tables = tuple(
            path_table(tree, fraction) * points_per_tree
            for tree, fraction in zip(trees, fractions, strict=True)
        )
        baseline = 100.0 * float(np.mean([fraction[0] for fraction in fractions]))
        return cls(baseline, trees, tables)

    def contributions(self, leaves: np.ndarray) -> np.ndarray:
        """(n, 30) points for the (n, n_trees) leaf ids that `apply()` returns."""
        total = np.zeros((len(leaves), N_FEATURES))
        for table, tree_leaves in zip(self.tables, leaves.T, strict=True):
            total += table[tree_leaves]
        return total


def fraud_fractions(tree: Any, fraud_column: int) -> np.ndarray:
    """Each node's weighted fraud fraction, normalised as predict_proba normalises a leaf."""
    value = tree.value[:, 0, :]
    total = value.sum(axis=1)
    total[total == 0.0] = 1.0
    fractions: np.ndarray = value[:, fraud_column] / total
    return fractions


def path_table(tree: Any, fractions: np.ndarray) -> np.ndarray:
    """(nodes, 30): per node, each split's change in fraud fraction on the way from the root,
    summed per split feature. Filled one depth level at a time."""
    table = np.zeros((tree.node_count, N_FEATURES))
    frontier = np.array([0])
    while frontier.size:
        splits = frontier[tree.children_left[frontier] != _LEAF]
        features = tree.feature[splits]
        children = []
        for side in (tree.children_left[splits], tree.children_right[splits]):
            table[side] = table[splits]
            table[side, features] += fractions[side] - fractions[splits]
            children.append(side)
        frontier = np.concatenate(children)
    return table


@dataclass(frozen=True)
class ServedGraphs:
    """A served .onnx split for ONNX Runtime: the classifier alone, and the explain graph."""

    plain: bytes
    explain: bytes | None = None
    explanation: str | None = None
    baseline: float | None = None
    leaves: bytes | None = None
    """The leaf-index regressor, and the graph of its constant leaf table: both or neither."""
    leaf_table: bytes | None = None


def with_reasons(
    model_bytes: bytes, decomposition: Decomposition, *, leaf_table: bool = True
) -> bytes:
    """The classifier's graph plus the reason-code regressor (output `reasons`), the baseline and
    the method in the model's metadata. Refuses a classifier whose trees are not the forest's.

    With `leaf_table`, also the same numbers for batches by another route: a regressor giving
    each row's leaf in every tree (output `leaves`) and every leaf's row of `reasons` (the
    constant `leaf_reasons`), whose sum over a row's leaves the service takes as one sparse
    product. Summed tree by tree in float32 as ONNX Runtime sums the regressor's weights, it
    gives the same bits; each weight is then one SIMD lane of a dense row instead of one pass
    of the regressor's loop (~2.5 ns each, 1,100 a row)."""
    import onnx

    model = onnx.load_model_from_string(model_bytes)
    classifiers = [node for node in model.graph.node if node.op_type == _CLASSIFIER]
    if len(classifiers) != 1 or len(model.graph.node) != 1:
        raise ReasonsUnavailable("the graph is not a single tree ensemble classifier")
    (classifier,) = classifiers
    attributes = node_attributes(classifier)
    check_same_trees(attributes, decomposition.trees)
    tree_ids, node_ids, fraud_weights = _fraud_leaf_weights(attributes)
    leaf_vectors = np.stack(
        [decomposition.tables[t][n] for t, n in zip(tree_ids, node_ids, strict=True)]
    )
    # Only the features on a leaf's path move its score: a sparse leaf costs ONNX Runtime less.
    leaf, feature = np.nonzero(leaf_vectors)
    leaves = np.concatenate([leaf, np.arange(len(tree_ids))])
    order = np.argsort(leaves, kind="stable")
    regressor = tree_regressor(
        classifier,
        tree_ids=tree_ids[leaves][order],
        node_ids=node_ids[leaves][order],
        target_ids=np.concatenate([feature, np.full(len(tree_ids), N_FEATURES)])[order],
        # The classifier's own float32 weights, summed in the same order: the same P(fraud).
        weights=np.concatenate([leaf_vectors[leaf, feature], fraud_weights])[order],
        n_targets=REASONS_TARGETS,
        output=REASONS_OUTPUT,
    )
    model.graph.node.append(regressor)
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(
            REASONS_OUTPUT, onnx.TensorProto.FLOAT, [None, REASONS_TARGETS]
        )
    )
    if leaf_table:
        _add_leaf_table(model, classifier, tree_ids, node_ids, leaf_vectors, fraud_weights)
    model.metadata_props.add(key=EXPLANATION_KEY, value=TREE_PATH)
    model.metadata_props.add(key=BASELINE_KEY, value=repr(decomposition.baseline))
    return model.SerializeToString()


def _add_leaf_table(
    model: Any,
    classifier: Any,
    tree_ids: np.ndarray,
    node_ids: np.ndarray,
    leaf_vectors: np.ndarray,
    fraud_weights: np.ndarray,
) -> None:
    import onnx
    from onnx import numpy_helper

    # Rows tree by tree: a row's leaves come in ascending rows, so the sparse product adds its
    # trees in the regressor's order.
    order = np.lexsort((node_ids, tree_ids))
    if len(order) >= 2**24:
        return  # float32 cannot index so many: the regressor explains alone
    table = np.column_stack((leaf_vectors, fraud_weights)).astype(np.float32)[order]
    n_trees = int(tree_ids.max()) + 1
    leaves = tree_regressor(
        classifier,
        tree_ids=tree_ids[order],
        node_ids=node_ids[order],
        target_ids=tree_ids[order],
        weights=np.arange(len(order), dtype=np.float32),  # each row of the table, exactly
        n_targets=n_trees,
        output=LEAVES_OUTPUT,
    )
    constant = onnx.helper.make_node(
        "Constant",
        [],
        [LEAF_TABLE_OUTPUT],
        name=LEAF_TABLE_OUTPUT,
        value=numpy_helper.from_array(table, LEAF_TABLE_OUTPUT),
    )
    model.graph.node.extend([leaves, constant])
    model.graph.output.extend(
        [
            onnx.helper.make_tensor_value_info(
                LEAVES_OUTPUT, onnx.TensorProto.FLOAT, [None, n_trees]
            ),
            onnx.helper.make_tensor_value_info(
                LEAF_TABLE_OUTPUT, onnx.TensorProto.FLOAT, list(table.shape)
            ),
        ]
    )


def tree_regressor(
    classifier: Any,
    *,
    tree_ids: np.ndarray,
    node_ids: np.ndarray,
    target_ids: np.ndarray,
    weights: np.ndarray,
    n_targets: int,
    output: str,
) -> Any:
    """A TreeEnsembleRegressor on the classifier's own node arrays (so every row reaches the
    classifier's leaves) with the given leaf weights, summed over trees."""
    import onnx

    regressor = onnx.helper.make_node(
        _REGRESSOR,
        [classifier.input[0]],
        [output],
        name=output,
        domain="ai.onnx.ml",
        n_targets=n_targets,
        aggregate_function="SUM",
        post_transform="NONE",
        target_treeids=tree_ids.tolist(),
        target_nodeids=node_ids.tolist(),
        target_ids=target_ids.tolist(),
        target_weights=weights.tolist(),
    )
    regressor.attribute.extend(a for a in classifier.attribute if a.name.startswith("nodes_"))
    return regressor


def node_attributes(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def check_same_trees(attributes: dict[str, Any], trees: Sequence[Any]) -> None:
    """The classifier's nodes are the forest's, node id for node id: same children, features,
    and a float32 threshold that sends every float32 value the way scikit-learn's double does."""
    tree_ids = np.asarray(attributes["nodes_treeids"])
    node_ids = np.asarray(attributes["nodes_nodeids"])
    if set(tree_ids.tolist()) != set(range(len(trees))):
        raise ReasonsUnavailable(f"the graph's trees are not the forest's {len(trees)}")
    columns = {
        name: np.asarray(attributes[f"nodes_{name}"])
        for name in ("modes", "featureids", "truenodeids", "falsenodeids", "values")
    }
    for number, tree in enumerate(trees):
        mine = np.flatnonzero(tree_ids == number)
        order = mine[np.argsort(node_ids[mine])]
        if not np.array_equal(node_ids[order], np.arange(tree.node_count)):
            raise ReasonsUnavailable(f"tree {number}: the graph's node ids are not the forest's")
        split = tree.children_left != _LEAF
        modes = np.where(split, b"BRANCH_LEQ", b"LEAF")
        threshold = columns["values"][order][split].astype(np.float32)
        same = (
            np.array_equal(columns["modes"][order], modes)
            and np.array_equal(columns["featureids"][order][split], tree.feature[split])
            and np.array_equal(columns["truenodeids"][order][split], tree.children_left[split])
            and np.array_equal(columns["falsenodeids"][order][split], tree.children_right[split])
            and np.all(threshold <= tree.threshold[split])
            and np.all(np.nextafter(threshold, np.float32(np.inf)) > tree.threshold[split])
        )
        if not same:
            raise ReasonsUnavailable(f"tree {number} of the graph differs from the forest's")


def _fraud_leaf_weights(attributes: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """skl2onnx's binary layout: one weight per leaf, under class id 0, read as P(fraud)."""
    labels = list(attributes.get("classlabels_int64s", []))
    if labels != [0, 1] or set(attributes["class_ids"]) != {0}:
        raise ReasonsUnavailable("the classifier's leaf weights are not one P(fraud) per leaf")
    return (
        np.asarray(attributes["class_treeids"], dtype=np.int64),
        np.asarray(attributes["class_nodeids"], dtype=np.int64),
        np.asarray(attributes["class_weights"], dtype=np.float32),
    )


def split(model_bytes: bytes) -> ServedGraphs:
    """The classifier-only graph (today's graph at today's cost: ONNX Runtime computes every
    output of a graph, whatever run() asks for) and, when the model has one, the explain graph
    (and the leaf-table graphs, when it has them too). An .onnx without reasons comes back
    unchanged. Raises ValueError on an unreadable graph.

    Works on the serialised bytes (app.protowire): workers never import the onnx package."""
    model = list(protowire.fields(model_bytes))
    graphs = [payload for number, payload, _ in model if number == _MODEL_GRAPH]
    if len(graphs) != 1:
        return ServedGraphs(model_bytes)  # not ours to judge: ONNX Runtime says what is wrong
    graph = list(protowire.fields(graphs[0]))
    if not any(REASONS_OUTPUT in _node_outputs(number, payload) for number, payload, _ in graph):
        return ServedGraphs(model_bytes)
    metadata = dict(
        _entry(payload) for number, payload, _ in model if number == _MODEL_METADATA_PROPS
    )
    try:
        baseline = float(metadata[BASELINE_KEY])
        explanation = metadata[EXPLANATION_KEY]
    except (KeyError, ValueError):
        raise ValueError("the reasons graph has no readable baseline and method") from None
    if explanation != TREE_PATH or not 0.0 <= baseline <= 100.0:
        raise ValueError("the reasons graph's method or baseline is not one this service serves")
    ours = {EXPLANATION_KEY, BASELINE_KEY}
    added = {REASONS_OUTPUT, LEAVES_OUTPUT, LEAF_TABLE_OUTPUT}
    plain = _rebuild(model, graph, lambda name: name not in added, drop_metadata=ours)
    explain = _rebuild(model, graph, lambda name: name == REASONS_OUTPUT, drop_metadata=set())
    outputs = {name for number, payload, _ in graph for name in _node_outputs(number, payload)}
    if not {LEAVES_OUTPUT, LEAF_TABLE_OUTPUT} <= outputs:
        return ServedGraphs(plain, explain, explanation, baseline)  # the regressor alone
    leaves = _rebuild(model, graph, lambda name: name == LEAVES_OUTPUT, drop_metadata=set())
    table = _rebuild(model, graph, lambda name: name == LEAF_TABLE_OUTPUT, drop_metadata=set())
    return ServedGraphs(plain, explain, explanation, baseline, leaves, table)


# ONNX's field numbers (onnx/onnx-ml.proto), pinned by a test against the onnx package.
_MODEL_GRAPH, _MODEL_METADATA_PROPS = 7, 14
_GRAPH_NODE, _GRAPH_OUTPUT = 1, 12
_NODE_OUTPUT, _VALUE_INFO_NAME, _ENTRY_KEY, _ENTRY_VALUE = 2, 1, 1, 2

Field = tuple[int, bytes, bytes]


def _rebuild(
    model: list[Field], graph: list[Field], keep: Callable[[str], bool], drop_metadata: set[str]
) -> bytes:
    """The model with only the graph's nodes and outputs whose output names pass `keep`."""
    kept_graph = b"".join(
        raw
        for number, payload, raw in graph
        if all(keep(name) for name in _node_outputs(number, payload))
        and (number != _GRAPH_OUTPUT or keep(_value_name(payload)))
    )
    parts = []
    for number, payload, raw in model:
        if number == _MODEL_GRAPH:
            parts.append(protowire.length_delimited(_MODEL_GRAPH, kept_graph))
        elif number != _MODEL_METADATA_PROPS or _entry(payload)[0] not in drop_metadata:
            parts.append(raw)
    return b"".join(parts)


def _node_outputs(number: int, payload: bytes) -> list[str]:
    return protowire.strings(payload, _NODE_OUTPUT) if number == _GRAPH_NODE else []


def _value_name(payload: bytes) -> str:
    (name,) = protowire.strings(payload, _VALUE_INFO_NAME)
    return name


def _entry(payload: bytes) -> tuple[str, str]:
    values = {number: value.decode() for number, value, _ in protowire.fields(payload)}
    return values.get(_ENTRY_KEY, ""), values.get(_ENTRY_VALUE, "")
