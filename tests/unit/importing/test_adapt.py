"""Imported graphs reshaped to the bundle's conventions: one column per input, ``label`` as an
index into the labels, ``probabilities`` [n, k], ``prediction`` [n, 1]; and what is refused."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from ferry.core.signature import InputSpec
from ferry.errors import DataError, ExportError
from ferry.export.parity import session
from ferry.importing.adapt import bundle_graph
from ferry.importing.columns import Hints, is_unnamed, plan_inputs
from ferry.importing.graph import inputs_from_graph
from ferry.importing.sources import detect_format

X = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)


def columns(graph: onnx.ModelProto) -> list[InputSpec]:
    return inputs_from_graph(graph)


def run(model_bytes: bytes, matrix: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    sess = session(model_bytes)
    feeds = {n: matrix[:, [i]] for i, n in enumerate(names)}
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def sklearn_graph(model: object, zipmap: bool = True) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {} if zipmap else {id(model): {"zipmap": False}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_sklearn(
            model, initial_types=[("X", FloatTensorType([None, 3]))], options=options
        )


def fitted(labels: np.ndarray) -> object:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=500).fit(X, labels)


def test_string_classes_from_a_zipmap_become_labels_and_indices() -> None:
    truth = np.where(X[:, 0] > 0.3, "fraud", np.where(X[:, 1] > 0, "legit", "review"))
    model = fitted(truth)
    model_bytes, outputs = bundle_graph(sklearn_graph(model), columns(sklearn_graph(model)))
    assert outputs.task == "multiclass" and outputs.labels == ["fraud", "legit", "review"]
    got = run(model_bytes, X, ["X_0", "X_1", "X_2"])
    assert got["label"].dtype == np.int64 and got["probabilities"].shape == (60, 3)
    assert list(np.asarray(outputs.labels)[got["label"]]) == list(model.predict(X))
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(X), atol=1e-5)


def test_known_integer_classes_map_the_models_own_label() -> None:
    truth = np.where(X[:, 0] > 0, 7, 3)
    model = fitted(truth)
    graph = sklearn_graph(model, zipmap=False)
    model_bytes, outputs = bundle_graph(graph, columns(graph), classes=[3, 7])
    assert outputs.task == "binary" and outputs.labels == ["3", "7"]
    got = run(model_bytes, X, ["X_0", "X_1", "X_2"])
    assert list(np.asarray(outputs.labels)[got["label"]]) == [str(v) for v in model.predict(X)]


def test_unknown_classes_fall_back_to_the_top_probability_and_given_names() -> None:
    model = fitted(np.where(X[:, 0] > 0, 7, 3))
    graph = sklearn_graph(model, zipmap=False)  # no ZipMap: the graph does not say its classes
    model_bytes, outputs = bundle_graph(graph, columns(graph), labels=["low", "high"])
    got = run(model_bytes, X, ["X_0", "X_1", "X_2"])
    assert outputs.labels == ["low", "high"]
    np.testing.assert_array_equal(got["label"], np.argmax(got["probabilities"], axis=1))


def _score_graph(width: int, batch: int | None = None) -> onnx.ModelProto:
    """x [n, 3] -> MatMul with ones -> [n, width] scores."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, width], [1.0] * 3 * width)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["scores"])],
        "scores",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, width])],
        [weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_one_logit_becomes_two_probabilities() -> None:
    graph = _score_graph(1)
    model_bytes, outputs = bundle_graph(
        graph, columns(graph), task="classification", scores="logits"
    )
    got = run(model_bytes, X, ["x_0", "x_1", "x_2"])
    p = 1 / (1 + np.exp(-X.sum(axis=1)))
    np.testing.assert_allclose(got["probabilities"], np.column_stack([1 - p, p]), atol=1e-6)
    np.testing.assert_array_equal(got["label"], (p > 0.5).astype(int))
    assert outputs.labels == ["0", "1"]


def test_regression_output_and_column_inputs_with_casts() -> None:
    graph = _score_graph(1)
    specs = [InputSpec(name=n, dtype="float32") for n in ("a", "b", "c")]
    model_bytes, outputs = bundle_graph(graph, specs)
    assert outputs.task == "regression" and outputs.labels is None
    got = run(model_bytes, X, ["a", "b", "c"])
    np.testing.assert_allclose(got["prediction"], X.sum(axis=1, keepdims=True), atol=1e-5)


@pytest.mark.parametrize(
    ("graph", "names", "options", "message"),
    [
        (_score_graph(1, batch=1), None, {}, r"fixed number of rows.*dynamic first dimension"),
        (_score_graph(3), None, {"task": "regression"}, r"one value per row.*--task class"),
        (_score_graph(1), ["a", "b"], {}, r"do not match the graph's inputs.*--signature"),
        (_score_graph(1), ["label", "b", "c"], {}, r"share a name with the bundle"),
    ],
)
def test_graphs_that_cannot_be_served_are_refused(
    graph: onnx.ModelProto, names: list[str] | None, options: dict[str, str], message: str
) -> None:
    specs = columns(graph) if names is None else [InputSpec(name=n, dtype="float32") for n in names]
    with pytest.raises(ExportError, match=message):
        bundle_graph(graph, specs, **options)


def test_input_names_come_from_the_model_then_the_sample_then_positions() -> None:
    sample = pd.DataFrame({"amount": [1.0, 2.0], "country": ["US", "NG"], "age": [3, 4]})
    named = plan_inputs(
        ["amount", "country", "age"], 3, Hints(sample=sample), nullable=False, generic="x"
    )
    assert [(s.name, s.kind, s.dtype) for s in named][1] == ("country", "categorical", "string")
    from_sample = plan_inputs(
        ["Column_0", "Column_1", "Column_2"],
        3,
        Hints(sample=sample),
        nullable=True,
        generic="Column_",
    )
    assert [s.name for s in from_sample] == ["amount", "country", "age"]
    assert all(not is_unnamed(s) for s in from_sample)
    positional = plan_inputs(None, 2, Hints(), nullable=False, generic="x")
    assert [s.name for s in positional] == ["x0", "x1"] and all(map(is_unnamed, positional))
    with pytest.raises(DataError, match=r"takes 2 unnamed features but --sample has 3 columns"):
        plan_inputs(None, 2, Hints(sample=sample), nullable=False, generic="x")


def test_formats_are_told_by_suffix_or_flag() -> None:
    from pathlib import Path

    assert detect_format(Path("m.ONNX"), None) == "onnx"
    assert detect_format(Path("m.joblib"), None) == "sklearn"
    assert detect_format(Path("m.ubj"), None) == "xgboost"
    assert detect_format(Path("m.bin"), "lightgbm") == "lightgbm"
    with pytest.raises(ExportError, match=r"pass --format one of"):
        detect_format(Path("m.bin"), None)
