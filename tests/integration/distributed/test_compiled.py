"""Compiled trees against ONNX Runtime: the same answers on real converted models, and the
scorer's fallback whenever the two could differ."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)

from ferry.core.bundle import read_manifest
from ferry.distributed import compiled as compiled_module
from ferry.distributed.batch import score_file
from ferry.distributed.compiled import compile_graph
from ferry.distributed.scorer import SPOT_ROWS, BundleScorer, disagreement
from ferry.errors import DataError
from ferry.export.converters import register_converters
from ferry.serving.runtime import OnnxModel

ROWS = 3000


def _data(seed: int = 0, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        ROWS, 8, n_informative=5, n_classes=classes, n_clusters_per_class=1, random_state=seed
    )
    x = x.astype(np.float32)
    x[np.random.default_rng(seed).random(x.shape) < 0.05] = np.nan  # missing values
    return x, y


def _graph(model: object, tmp_path: Path, width: int = 8) -> Path:
    register_converters()  # skl2onnx 1.20's HistGradientBoosting export needs Ferry's patch
    proto = convert_sklearn(
        model,
        initial_types=[("x", FloatTensorType([None, width]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
        options={id(model): {"zipmap": False}} if hasattr(model, "classes_") else None,
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


def _same_answers(path: Path, x: np.ndarray, **more: np.ndarray) -> None:
    graph, reason = compile_graph(path)
    assert graph is not None, reason
    feeds = {"x": x, **more}
    expected, got = OnnxModel(path).run(feeds), graph.run(feeds)
    assert disagreement(expected, got) == ""
    assert set(got) == set(expected)


@pytest.mark.parametrize("classes", [2, 4])
def test_histogram_boosting_classifiers_with_missing_values(tmp_path: Path, classes: int) -> None:
    x, y = _data(classes=classes)
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y)
    _same_answers(_graph(model, tmp_path), _data(seed=1, classes=classes)[0])


def test_histogram_boosting_regressor(tmp_path: Path) -> None:
    x, y = make_regression(ROWS, 8, random_state=0)
    model = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(x, y)
    _same_answers(_graph(model, tmp_path), x.astype(np.float32))


def test_trees_over_32_leaves_use_64_bit_words(tmp_path: Path) -> None:
    x, y = _data()
    model = HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=60, random_state=0)
    path = _graph(model.fit(x, y), tmp_path)
    graph, _ = compile_graph(path)
    assert graph is not None and graph.tables.masks.dtype == np.uint64
    _same_answers(path, _data(seed=2)[0])


def test_gradient_boosting_without_missing_values(tmp_path: Path) -> None:
    x, y = _data()
    x = np.nan_to_num(x)
    model = GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0).fit(x, y)
    _same_answers(_graph(model, tmp_path), x)


def test_every_comparison_mode_and_nan_direction(tmp_path: Path) -> None:
    """A hand-made regressor: one stump per mode, NaN sent true on half of them, and an
    input nothing reads."""
    modes = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT"]
    nodes: dict[str, list] = {
        key: []
        for key in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_values",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
        )
    }
    targets: dict[str, list] = {
        key: []
        for key in (
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        )
    }
    for tree, mode in enumerate(modes):
        for node, (kind, true_id, false_id) in enumerate(
            [(mode, 1, 2), ("LEAF", 0, 0), ("LEAF", 0, 0)]
        ):
            values = [tree, node, tree % 2, 0.0, kind, true_id, false_id, int(tree < 2)]
            for key, value in zip(nodes, values, strict=True):
                nodes[key].append(value)
        for leaf, weight in ((1, 1.0 + tree), (2, -10.0 * (tree + 1))):
            for key, value in zip(targets, (tree, leaf, 0, weight), strict=True):
                targets[key].append(value)
    node = helper.make_node(
        "TreeEnsembleRegressor",
        ["x"],
        ["y"],
        domain="ai.onnx.ml",
        n_targets=1,
        base_values=[0.5],
        **nodes,
        **targets,
    )
    graph = helper.make_graph(
        [node],
        "stumps",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2]),
            # An input no node reads: the cut graph drops it, and its feed with it.
            helper.make_tensor_value_info("note", TensorProto.STRING, [None, 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    path = tmp_path / "stumps.onnx"
    onnx.save(model, str(path))
    x = np.array([[0, 0], [-1, 1], [1, -1], [np.nan, 0], [0, np.nan], [np.nan, np.nan]], np.float32)
    _same_answers(path, x, note=np.asarray([["a"]] * len(x), dtype=object))


def test_deep_random_forests_stay_on_onnx_runtime_with_the_reason(tmp_path: Path) -> None:
    x, y = make_regression(ROWS, 8, random_state=0)
    model = RandomForestRegressor(n_estimators=3, random_state=0).fit(x, y)
    graph, reason = compile_graph(_graph(model, tmp_path))
    assert graph is None
    assert "more than the kernel's 64 leaves" in reason


@pytest.fixture(scope="module")
def fraud_file(tmp_path_factory: pytest.TempPathFactory, fraud_rows: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("files") / "fraud.parquet"
    fraud_rows.to_parquet(path, row_group_size=2000)
    return path


def _scored(bundle: Path, source: Path, output: Path, engine: str) -> tuple[pd.DataFrame, str]:
    report = score_file(bundle, source, output, chunk_rows=1000, engine=engine)  # type: ignore[arg-type]
    return pq.read_table(output).to_pandas(), report.engine


def test_a_lab_bundle_scores_the_same_file_alike_on_both_engines(
    tmp_path: Path, trees_bundle: Path, fraud_file: Path
) -> None:
    """The whole path: datetimes, categories, booleans, missing values, threshold decision."""
    whole, engine = _scored(trees_bundle, fraud_file, tmp_path / "ort.parquet", "onnxruntime")
    assert engine == "onnxruntime"
    split, engine = _scored(trees_bundle, fraud_file, tmp_path / "kernel.parquet", "compiled")
    assert engine.startswith("compiled trees (equal to ONNX Runtime")
    assert split["prediction"].tolist() == whole["prediction"].tolist()
    for column in [c for c in whole.columns if c.startswith("probability_")]:
        np.testing.assert_allclose(split[column], whole[column], atol=1e-6)


def test_auto_keeps_onnx_runtime_for_small_files(
    tmp_path: Path, trees_bundle: Path, fraud_file: Path
) -> None:
    _, engine = _scored(trees_bundle, fraud_file, tmp_path / "out.parquet", "auto")
    assert engine == "onnxruntime"


def test_compiled_refuses_a_graph_without_trees(
    tmp_path: Path, fraud_bundle: Path, fraud_file: Path
) -> None:
    with pytest.raises(DataError, match="cannot be compiled: the graph has 0 tree ensembles"):
        _scored(fraud_bundle, fraud_file, tmp_path / "out.parquet", "compiled")
    assert not (tmp_path / "out.parquet").exists()


def _skew_finish(monkeypatch: pytest.MonkeyPatch, skew: Callable[[int, np.ndarray], None]) -> None:
    """Make the compiled graph wrong: ``skew(call, probabilities)`` edits each answer."""
    real_finish, calls = compiled_module.finish, [0]

    def skewed(tables, scores):  # type: ignore[no-untyped-def]
        outputs = real_finish(tables, scores)
        calls[0] += 1
        skew(calls[0], outputs[1])
        return outputs

    monkeypatch.setattr(compiled_module, "finish", skewed)


def _whole_graph(bundle: Path, batch: pa.RecordBatch) -> pa.RecordBatch:
    scorer = BundleScorer(bundle, engine="onnxruntime")
    try:
        return scorer.score(batch)
    finally:
        scorer.close()


def test_a_compiled_graph_that_disagrees_at_once_is_dropped_or_refused(
    tmp_path: Path, trees_bundle: Path, fraud_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def everywhere(call: int, proba: np.ndarray) -> None:
        proba += np.float32(0.01)

    _skew_finish(monkeypatch, everywhere)
    with pytest.raises(DataError, match="the compiled trees disagree with ONNX Runtime on the"):
        _scored(trees_bundle, fraud_file, tmp_path / "out.parquet", "compiled")
    assert not (tmp_path / "out.parquet").exists()
    batch = pq.read_table(fraud_file).to_batches(max_chunksize=500)[0]
    scorer = BundleScorer(trees_bundle, engine="auto")
    try:
        outputs = scorer.score(batch)
        assert scorer.compiled is None
        assert scorer.engine.startswith(
            "onnxruntime (the compiled trees disagree with ONNX Runtime on the first rows:"
        )
        assert outputs.equals(_whole_graph(trees_bundle, batch))
    finally:
        scorer.close()


def test_a_later_chunk_that_disagrees_sends_the_rest_of_the_file_to_onnx_runtime(
    trees_bundle: Path, fraud_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first rows agree; the third chunk does not: its spot check catches it."""

    def from_third_chunk(call: int, proba: np.ndarray) -> None:
        if call > 3:  # call 1: the first check, 2-3: chunks 1-2 (one slice each)
            proba += np.float32(0.01)

    _skew_finish(monkeypatch, from_third_chunk)
    batches = pq.read_table(fraud_file).to_batches(max_chunksize=1000)
    scorer = BundleScorer(trees_bundle, threads=1, engine="compiled")
    with pytest.raises(DataError, match="on the chunk from data row 2001"):
        for first, batch in enumerate(batches):
            scorer.score(batch, first * 1000)
    with pytest.raises(DataError, match="--engine compiled"):  # and every chunk after it
        scorer.score(batches[0])
    scorer.close()
    monkeypatch.undo()
    _skew_finish(monkeypatch, from_third_chunk)
    scorer = BundleScorer(trees_bundle, threads=1, engine="auto")
    try:
        scored = [scorer.score(batch, first * 1000) for first, batch in enumerate(batches)]
        assert scorer.engine.startswith("onnxruntime (the compiled trees disagree with ONNX")
        assert all(
            got.equals(_whole_graph(trees_bundle, batch))
            for got, batch in list(zip(scored, batches, strict=True))[2:]
        )
    finally:
        scorer.close()


def test_rows_at_the_decision_threshold_get_onnx_runtime_s_answer(
    trees_bundle: Path, fraud_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rounding difference past the spot-checked rows that would flip a decision."""
    threshold = np.float32(read_manifest(trees_bundle).threshold)

    def to_the_threshold(call: int, proba: np.ndarray) -> None:
        if call > 1 and len(proba) > SPOT_ROWS:  # the chunk, past the first check
            proba[SPOT_ROWS:, 1] = threshold  # decided positive, wherever ORT put them
            proba[SPOT_ROWS:, 0] = 1 - threshold

    _skew_finish(monkeypatch, to_the_threshold)
    batch = pq.read_table(fraud_file).to_batches(max_chunksize=2000)[0]
    scorer = BundleScorer(trees_bundle, threads=1, engine="compiled")
    try:
        got = scorer.score(batch)
        assert scorer.compiled is not None  # still compiled: nothing disagreed
        expected = _whole_graph(trees_bundle, batch)
        assert got.column("prediction").to_pylist() == expected.column("prediction").to_pylist()
        np.testing.assert_allclose(
            got.column("probability_1").to_numpy(), expected.column("probability_1").to_numpy()
        )
    finally:
        scorer.close()


def _cli(*args: str) -> tuple[int, str]:
    """Exit code, and the output or the error ``main`` would print."""
    from typer.testing import CliRunner

    from ferry.cli.app import _register_groups, app

    _register_groups()
    result = CliRunner().invoke(app, ["predict", *args])
    return result.exit_code, result.output + str(result.exception or "")


def test_cli_says_which_engine_ran_the_graph(
    tmp_path: Path, trees_bundle: Path, fraud_file: Path
) -> None:
    output = tmp_path / "scored.parquet"
    code, text = _cli(str(trees_bundle), str(fraud_file), "-o", str(output), "--engine", "compiled")
    assert code == 0, text
    assert "graph: compiled trees (equal to ONNX Runtime on 2,000 rows)" in text  # a row group
    code, text = _cli(str(trees_bundle), str(fraud_file), "-o", str(output), "--engine", "fast")
    assert code != 0
    assert "--engine 'fast' is not one of auto, onnxruntime, compiled" in " ".join(text.split())


def test_rewrites_leave_the_graph_before_the_trees_bit_identical(
    trees_bundle: Path, fraud_file: Path
) -> None:
    """Category codes, reshaped and expanded constants: the trees see the very same floats."""
    from ferry.core.bundle import read_manifest
    from ferry.distributed.feeds import batch_feeds
    from ferry.distributed.rewrites import broadcast_constants, cut_before, integer_categories

    model = onnx.load(str(trees_bundle / "model.onnx"))
    tree = next(n for n in model.graph.node if n.op_type.startswith("TreeEnsemble"))
    plain, features = cut_before(model, tree.input[0])
    rewritten, _ = cut_before(onnx.load(str(trees_bundle / "model.onnx")), tree.input[0])
    categories = integer_categories(rewritten)
    broadcast_constants(rewritten)
    assert categories and {"Expand"} <= {n.op_type for n in rewritten.graph.node}
    signature = read_manifest(trees_bundle).signature
    batch = pq.read_table(fraud_file).to_batches()[0]
    before = OnnxModel(plain.SerializeToString()).run(batch_feeds(signature, batch))
    coded = batch_feeds(signature, batch, codes=categories)
    after = OnnxModel(rewritten.SerializeToString()).run(coded)
    assert np.array_equal(before[features], after[features], equal_nan=True)
