"""A graph's tree ensemble as flat tables for the batch kernel (``distributed.quickscore``).

The tables follow QuickScorer (Lucchese et al., SIGIR 2015): each tree's leaves are numbered
left to right (the true branch first), and each internal node carries a bit mask that clears
the leaves of its true subtree. A row starts every tree with all bits set and ANDs in the mask
of every node whose test it fails; its exit leaf is the lowest bit left. Every node is then a
compare and an AND over a block of rows, with no branch that depends on the data, so the
kernel vectorises where a tree walk cannot.

What the kernel cannot reproduce exactly is refused here with a reason, and the scorer keeps
ONNX Runtime for the whole graph: more than 64 leaves in a tree, EQ/NEQ tests, MIN/MAX
aggregation, PROBIT, or class layouts other than the binary one-score case, several classes
with a score each, and regression.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import NodeProto, helper, numpy_helper

TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
MAX_LEAVES = 64
# Node tests by code: the kernel's order.
MODES = {b"BRANCH_LEQ": 0, b"BRANCH_LT": 1, b"BRANCH_GTE": 2, b"BRANCH_GT": 3}
ALL_LEAVES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


class Unsupported(Exception):
    """The ensemble holds something the kernel does not reproduce; the message says what."""


@dataclass(frozen=True)
class TreeTables:
    features: np.ndarray  # int32 [nodes]: feature column each internal node tests
    thresholds: np.ndarray  # float32 [nodes]
    modes: np.ndarray  # int8 [nodes]: MODES
    missing_true: np.ndarray  # bool [nodes]: NaN takes the true branch
    masks: np.ndarray  # uint32 (trees of <= 32 leaves) or uint64 [nodes]: clears the node's
    # true-subtree leaves; the narrower word packs twice the rows into each vector
    trees: np.ndarray  # int32 [nodes]: the tree each node belongs to
    leaves: np.ndarray  # float32 [trees, 64, targets]: leaf weights by left-to-right position
    base: np.ndarray  # float32 [targets]
    average: bool  # AVERAGE aggregation: the sum is divided by the number of trees
    post_transform: str  # NONE, LOGISTIC or SOFTMAX
    binary: bool  # one score for two classes (ORT's "binary case")
    labels: np.ndarray | None  # class labels (classifiers), int64 or str


def attributes(node: NodeProto) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if attribute.type == attribute.TENSOR:
            value = numpy_helper.to_array(value)
        values[attribute.name] = value
    return values


def tree_tables(node: NodeProto) -> TreeTables:
    """The tables of a TreeEnsembleClassifier/Regressor node, or ``Unsupported``."""
    if node.op_type not in TREE_OPS or node.domain != "ai.onnx.ml":
        raise Unsupported(f"node {node.name!r} is a {node.op_type}, not a tree ensemble")
    a = attributes(node)
    doubles = sorted(name for name in a if name.endswith("_as_tensor"))
    if doubles:  # ONNX Runtime compares and sums these in float64; the kernel works in float32
        raise Unsupported(f"double-precision trees ({', '.join(doubles)})")
    classifier = node.op_type == "TreeEnsembleClassifier"
    prefix = "class" if classifier else "target"
    targets = _target_count(a, classifier, prefix)
    nodes = _Nodes(a)
    leaf_weights = _leaf_weights(a, prefix, targets)
    columns = _node_columns(nodes, leaf_weights, targets)
    binary = classifier and targets == 1
    post = _post_transform(a, classifier, binary, leaf_weights)
    return TreeTables(
        **columns,
        base=_base(a, targets),
        average=_aggregate(a) == "AVERAGE",
        post_transform=post,
        binary=binary,
        labels=_labels(a) if classifier else None,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _labels(a: dict[str, Any]) -> np.ndarray:
    if "classlabels_int64s" in a:
        return np.asarray(a["classlabels_int64s"], dtype=np.int64)
    return np.asarray([_text(v) for v in a["classlabels_strings"]], dtype=object)


def _target_count(a: dict[str, Any], classifier: bool, prefix: str) -> int:
    if not classifier:
        return int(a.get("n_targets", 1))
    classes = len(_labels(a))
    ids = set(a.get(f"{prefix}_ids", []))
    scored = len(ids)
    if classes == 2 and ids == {0}:  # ORT's one-score binary case (another id keeps two)
        return 1
    if classes > 2 and scored == classes:
        return classes
    raise Unsupported(f"{classes} class labels with scores for {scored} of them")


def _aggregate(a: dict[str, Any]) -> str:
    aggregate = _text(a.get("aggregate_function", "SUM"))
    if aggregate not in ("SUM", "AVERAGE"):
        raise Unsupported(f"aggregate_function {aggregate}")
    return aggregate


def _post_transform(
    a: dict[str, Any], classifier: bool, binary: bool, weights: dict[tuple[int, int], np.ndarray]
) -> str:
    post = _text(a.get("post_transform", "NONE"))
    allowed = ("NONE",) if not classifier else ("NONE", "LOGISTIC", "SOFTMAX")
    if post not in allowed:
        raise Unsupported(f"post_transform {post}")
    if binary:
        # ORT's one-score binary case has several branches; only the one boosting uses here.
        mixed = any((w < 0).any() for w in weights.values())
        if post != "LOGISTIC" or not mixed:
            raise Unsupported(f"a one-score binary classifier with post_transform {post}")
    return post


def _base(a: dict[str, Any], targets: int) -> np.ndarray:
    base = a.get("base_values")
    if base is None or len(base) == 0:
        return np.zeros(targets, dtype=np.float32)
    values = np.asarray(base, dtype=np.float32).reshape(-1)
    if len(values) != targets:
        raise Unsupported(f"{len(values)} base values for {targets} scores")
    return values


class _Nodes:
    """The node attributes indexed by (tree, node id)."""

    def __init__(self, a: dict[str, Any]) -> None:
        tree_ids, node_ids = a["nodes_treeids"], a["nodes_nodeids"]
        self.node_ids = node_ids
        self.index = {(t, n): i for i, (t, n) in enumerate(zip(tree_ids, node_ids, strict=True))}
        self.trees = sorted(set(tree_ids))
        self.modes = [_text(m).encode() for m in a["nodes_modes"]]
        self.features = a["nodes_featureids"]
        self.thresholds = np.asarray(a["nodes_values"], dtype=np.float32)
        self.true_ids, self.false_ids = a["nodes_truenodeids"], a["nodes_falsenodeids"]
        self.tree_of = tree_ids
        count = len(tree_ids)
        self.missing_true = (
            list(a.get("nodes_missing_value_tracks_true", [0] * count)) or [0] * count
        )

    def is_leaf(self, i: int) -> bool:
        return self.modes[i] == b"LEAF"

    def child(self, i: int, true_branch: bool) -> int:
        node_id = (self.true_ids if true_branch else self.false_ids)[i]
        return self.index[(self.tree_of[i], node_id)]


def _leaf_weights(
    a: dict[str, Any], prefix: str, targets: int
) -> dict[tuple[int, int], np.ndarray]:
    weights: dict[tuple[int, int], np.ndarray] = {}
    rows = zip(
        a[f"{prefix}_treeids"],
        a[f"{prefix}_nodeids"],
        a[f"{prefix}_ids"],
        a[f"{prefix}_weights"],
        strict=True,
    )
    for tree, node, target, weight in rows:
        column = 0 if targets == 1 else int(target)
        leaf = weights.setdefault((tree, node), np.zeros(targets, dtype=np.float32))
        leaf[column] += np.float32(weight)
    return weights


def _node_columns(
    nodes: _Nodes, weights: dict[tuple[int, int], np.ndarray], targets: int
) -> dict[str, np.ndarray]:
    internal: list[tuple[int, int, int]] = []  # (node, tree position, mask)
    leaves = np.zeros((len(nodes.trees), MAX_LEAVES, targets), dtype=np.float32)
    largest = max(Counter(nodes.tree_of).values(), default=0)
    if largest > 2 * MAX_LEAVES - 1:  # checked first: it also bounds the walk's recursion
        raise Unsupported(
            f"a tree of {largest} nodes, more than the kernel's {MAX_LEAVES} leaves (at most "
            f"{MAX_LEAVES} leaves, {2 * MAX_LEAVES - 1} nodes per tree)"
        )
    for position, tree in enumerate(nodes.trees):
        order = _walk(nodes, nodes.index[(tree, 0)], (position, 0), internal)
        for k, leaf in enumerate(order):
            leaves[position, k] = weights.get((tree, nodes.node_ids[leaf]), 0.0)
    picked = [i for i, _, _ in internal]
    narrow = max(Counter(nodes.tree_of).values(), default=0) <= 2 * 32 - 1
    word, width = (np.uint32, 0xFFFF_FFFF) if narrow else (np.uint64, int(ALL_LEAVES))
    return {
        "features": np.asarray([nodes.features[i] for i in picked], dtype=np.int32),
        "thresholds": np.asarray(nodes.thresholds[picked], dtype=np.float32),
        "modes": np.asarray([MODES[nodes.modes[i]] for i in picked], dtype=np.int8),
        "missing_true": np.asarray([bool(nodes.missing_true[i]) for i in picked], dtype=bool),
        "masks": np.asarray([m & width for _, _, m in internal], dtype=word),
        "trees": np.asarray([t for _, t, _ in internal], dtype=np.int32),
        "leaves": leaves,
    }


def _walk(
    nodes: _Nodes, root: int, at: tuple[int, int], internal: list[tuple[int, int, int]]
) -> list[int]:
    """Leaves under ``root`` left to right, the first numbered ``at[1]`` in tree ``at[0]``;
    appends the subtree's internal nodes with their masks."""
    position, first = at
    if nodes.is_leaf(root):
        return [root]
    if nodes.modes[root] not in MODES:
        raise Unsupported(f"node test {nodes.modes[root].decode()}")
    slot = len(internal)
    internal.append((root, position, 0))
    true_leaves = _walk(nodes, nodes.child(root, True), at, internal)
    false_leaves = _walk(
        nodes, nodes.child(root, False), (position, first + len(true_leaves)), internal
    )
    cleared = ((1 << len(true_leaves)) - 1) << first
    internal[slot] = (root, position, int(ALL_LEAVES) & ~cleared)
    return true_leaves + false_leaves
