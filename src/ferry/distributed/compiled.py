"""A bundle's graph split at its tree ensemble: ONNX Runtime runs everything before the trees,
the QuickScorer kernel runs the trees, numpy finishes the scores as ONNX Runtime does.

On the fraud model the tree ensemble is two thirds of the graph's time in ONNX Runtime, and the
kernel runs it about seven times faster (see benchmarks/batch.py). ``compile_graph`` returns
None, with the reason, for any graph it cannot split cleanly; the scorer then keeps ONNX
Runtime for the whole graph, and it checks the split graph against the whole one on the first
rows of every file before trusting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto, NodeProto, helper

from ferry.distributed.rewrites import broadcast_constants, cut_before, integer_categories
from ferry.distributed.trees import TREE_OPS, TreeTables, Unsupported, tree_tables
from ferry.serving.runtime import OnnxModel

_CASTS = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
}


@dataclass(frozen=True)
class _Output:
    name: str  # the graph output
    source: int  # which output of the tree node: 0 label or values, 1 probabilities
    dtype: type | None  # a Cast between the two, if any


class CompiledGraph:
    """``run`` answers what ``OnnxModel.run`` answers for the whole graph.

    ``categories``: inputs the graph before the trees takes as codes, each with its category
    list: feeds give the position of each value in it, -1 for others (``feeds.category_codes``).
    """

    def __init__(
        self,
        prefix: OnnxModel,
        features: str,
        tables: TreeTables,
        outputs: list[_Output],
        categories: dict[str, list[str]],
    ) -> None:
        self.prefix, self.features, self.tables, self.outputs = prefix, features, tables, outputs
        self.categories = categories
        self.output_names = [o.name for o in outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ferry.distributed.quickscore import raw_scores

        # The cut graph keeps only the inputs something before the trees reads.
        used = {name: feeds[name] for name in self.prefix.input_names}
        rows = self.prefix.run(used, [self.features])[self.features]
        tree_outputs = finish(self.tables, raw_scores(self.tables, rows))
        return {o.name: _cast(tree_outputs[o.source], o.dtype) for o in self.outputs}


def _cast(values: np.ndarray, dtype: type | None) -> np.ndarray:
    return values if dtype is None else values.astype(dtype, copy=False)


def compile_graph(path: Path) -> tuple[CompiledGraph | None, str]:
    """The split graph, or None and why not (a sentence for the user)."""
    try:
        import ferry.distributed.quickscore  # noqa: F401  (numba compiles, or is missing)
    except ImportError as exc:
        return None, f"numba is not installed ({exc.name}); pip install numba"
    model = onnx.load(str(path))
    try:
        node = _tree_node(model)
        outputs = _outputs(model, node)
        tables = tree_tables(node)
    except Unsupported as exc:
        return None, str(exc)
    prefix, features = cut_before(model, node.input[0])
    categories = integer_categories(prefix)
    session = OnnxModel(broadcast_constants(prefix).SerializeToString())
    _warm(tables)
    return CompiledGraph(session, features, tables, outputs, categories), "compiled"


def _warm(tables: TreeTables) -> None:
    """Load (or, on a new machine, compile) the kernel now, on the caller's thread."""
    from ferry.distributed.quickscore import raw_scores

    width = int(tables.features.max(initial=0)) + 1
    raw_scores(tables, np.zeros((1, width), dtype=np.float32))


def _tree_node(model: ModelProto) -> NodeProto:
    trees = [n for n in model.graph.node if n.op_type in TREE_OPS]
    if len(trees) != 1:
        raise Unsupported(f"the graph has {len(trees)} tree ensembles (one is compiled)")
    return trees[0]


def _outputs(model: ModelProto, node: NodeProto) -> list[_Output]:
    """Each graph output must be a tree output, directly or through one Cast or Identity."""
    producers = {out: n for n in model.graph.node for out in n.output}
    found = []
    for output in model.graph.output:
        step = producers.get(output.name)
        if step is node:
            found.append(_Output(output.name, list(node.output).index(output.name), None))
            continue
        if (
            step is None
            or step.op_type not in ("Cast", "Identity")
            or step.input[0] not in node.output
        ):
            raise Unsupported(f"graph output {output.name!r} is not read off the tree ensemble")
        to = next((helper.get_attribute_value(a) for a in step.attribute if a.name == "to"), None)
        if step.op_type == "Cast" and to not in _CASTS:
            raise Unsupported(f"a Cast to type {to} after the trees")
        dtype = _CASTS[to] if to is not None else None
        found.append(_Output(output.name, list(node.output).index(step.input[0]), dtype))
    return found


# ---- after the trees: as ONNX Runtime's tree aggregators finish a row ---------------------------


def finish(tables: TreeTables, scores: np.ndarray) -> list[np.ndarray]:
    """The tree node's outputs from the summed leaf weights: [label, probabilities] for a
    classifier, [values] for a regressor."""
    if tables.average:
        scores = scores / np.float32(tables.leaves.shape[0])
    scores = (scores + tables.base).astype(np.float32, copy=False)
    if tables.labels is None:
        return [scores]
    if tables.binary:
        score = scores[:, 0]
        proba = np.stack([logistic(-score), logistic(score)], axis=1)
        return [tables.labels[(score > 0).astype(np.int64)], proba]
    label = tables.labels[np.argmax(scores, axis=1)]
    if tables.post_transform == "SOFTMAX":
        return [label, softmax(scores)]
    if tables.post_transform == "LOGISTIC":
        return [label, logistic(scores)]
    return [label, scores]


def logistic(values: np.ndarray) -> np.ndarray:
    """ONNX Runtime's ComputeLogistic: computed on |x| and mirrored, in float32."""
    half = (np.float32(1) / (np.float32(1) + np.exp(-np.abs(values)))).astype(np.float32)
    return np.where(values < 0, np.float32(1) - half, half).astype(np.float32)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True)).astype(np.float32)
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
