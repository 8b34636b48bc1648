"""Tree ensemble nodes to QuickScorer tables: leaf order, masks, and what is refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

from ferry.distributed.trees import Unsupported, tree_tables

# One tree:      0: x0 <= 1
#               /          \
#        1: x1 <= 2       2: leaf (+3)
#        /        \
#   3: leaf (+1)  4: leaf (+2)
TREE = {
    "nodes_treeids": [0, 0, 0, 0, 0],
    "nodes_nodeids": [0, 1, 2, 3, 4],
    "nodes_featureids": [0, 1, 0, 0, 0],
    "nodes_values": [1.0, 2.0, 0.0, 0.0, 0.0],
    "nodes_modes": ["BRANCH_LEQ", "BRANCH_LT", "LEAF", "LEAF", "LEAF"],
    "nodes_truenodeids": [1, 3, 0, 0, 0],
    "nodes_falsenodeids": [2, 4, 0, 0, 0],
    "nodes_missing_value_tracks_true": [1, 0, 0, 0, 0],
}
LEAVES = {
    "target_treeids": [0, 0, 0],
    "target_nodeids": [3, 4, 2],
    "target_ids": [0, 0, 0],
    "target_weights": [1.0, 2.0, 3.0],
}


def _regressor(**changes: Any) -> Any:
    attributes = {**TREE, **LEAVES, "n_targets": 1, **changes}
    return helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", **attributes
    )


def test_leaves_are_numbered_true_branch_first_and_masks_clear_true_subtrees() -> None:
    tables = tree_tables(_regressor())
    assert tables.features.tolist() == [0, 1] and tables.modes.tolist() == [0, 1]
    assert tables.missing_true.tolist() == [True, False]
    # Failing the root clears leaves 0 and 1 (its true subtree); failing node 1 clears leaf 0.
    assert tables.masks.dtype == np.uint32
    assert [int(m) for m in tables.masks] == [0xFFFF_FFFC, 0xFFFF_FFFE]
    assert tables.leaves[0, :3, 0].tolist() == [1.0, 2.0, 3.0]
    assert tables.base.tolist() == [0.0] and not tables.average and tables.labels is None


def test_average_and_base_values_are_kept() -> None:
    tables = tree_tables(_regressor(aggregate_function="AVERAGE", base_values=[0.25]))
    assert tables.average and tables.base.tolist() == [0.25]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aggregate_function": "MAX"}, "aggregate_function MAX"),
        ({"post_transform": "PROBIT"}, "post_transform PROBIT"),
        ({"nodes_modes": ["BRANCH_EQ", "BRANCH_LT", "LEAF", "LEAF", "LEAF"]}, "BRANCH_EQ"),
        ({"base_values": [0.0, 1.0]}, "2 base values for 1 scores"),
    ],
)
def test_what_the_kernel_cannot_reproduce_is_refused_with_the_reason(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Unsupported, match=reason):
        tree_tables(_regressor(**changes))


def test_trees_over_64_leaves_are_refused() -> None:
    """A chain of 70 tests: 71 leaves."""
    depth = 70
    ids = list(range(2 * depth + 1))
    nodes = {
        "nodes_treeids": [0] * len(ids),
        "nodes_nodeids": ids,
        "nodes_featureids": [0] * len(ids),
        "nodes_values": [float(i) for i in ids],
        "nodes_modes": ["BRANCH_LEQ" if i < depth else "LEAF" for i in ids],
        "nodes_truenodeids": [depth + i if i < depth else 0 for i in ids],
        "nodes_falsenodeids": [
            i + 1 if i < depth - 1 else 2 * depth if i == depth - 1 else 0 for i in ids
        ],
        "nodes_missing_value_tracks_true": [0] * len(ids),
    }
    leaves = {
        "target_treeids": [0],
        "target_nodeids": [depth],
        "target_ids": [0],
        "target_weights": [1.0],
    }
    node = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", n_targets=1, **nodes, **leaves
    )
    with pytest.raises(Unsupported, match="at most 64 leaves"):
        tree_tables(node)


def test_a_classifier_with_one_score_needs_the_logistic_boosting_layout() -> None:
    classifier = {
        **TREE,
        "class_treeids": LEAVES["target_treeids"],
        "class_nodeids": LEAVES["target_nodeids"],
        "class_ids": [0, 0, 0],
        "class_weights": [-1.0, 2.0, 3.0],
        "classlabels_int64s": [0, 1],
    }

    def node(**changes: Any) -> Any:
        return helper.make_node(
            "TreeEnsembleClassifier",
            ["x"],
            ["label", "probabilities"],
            domain="ai.onnx.ml",
            **{**classifier, **changes},
        )

    tables = tree_tables(node(post_transform="LOGISTIC"))
    assert tables.binary and tables.labels is not None and tables.labels.tolist() == [0, 1]
    with pytest.raises(Unsupported, match="one-score binary classifier with post_transform NONE"):
        tree_tables(node())
