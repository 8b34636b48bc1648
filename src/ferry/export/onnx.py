"""Fitted scikit-learn pipeline (preprocessing + model) to one ONNX graph."""

from __future__ import annotations

import warnings
from typing import Any

import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import (
    DataType,
    DoubleTensorType,
    FloatTensorType,
    Int64TensorType,
    StringTensorType,
)

from ferry.core.signature import InputSpec, OutputSpec
from ferry.errors import ExportError
from ferry.export.converters import register_converters
from ferry.training.features import FeatureLayout

OPSETS = {"": 17, "ai.onnx.ml": 3}
LABEL, PROBABILITIES, PREDICTION = "label", "probabilities", "prediction"


def initial_types(layout: FeatureLayout) -> list[tuple[str, DataType]]:
    types: list[tuple[str, DataType]] = []
    for column in layout.columns:
        kind = layout.kind_of(column)
        if kind == "datetime":
            types.append((column, DoubleTensorType([None, 1])))
        elif kind in ("categorical", "text"):
            types.append((column, StringTensorType([None, 1])))
        else:
            types.append((column, FloatTensorType([None, 1])))
    return types


def output_specs(task: str, n_classes: int) -> list[OutputSpec]:
    if task == "regression":
        return [OutputSpec(name=PREDICTION, dtype="float32", shape=[-1, 1])]
    return [
        OutputSpec(name=LABEL, dtype="int64", shape=[-1]),
        OutputSpec(name=PROBABILITIES, dtype="float32", shape=[-1, n_classes]),
    ]


def _final_types(task: str, n_classes: int) -> list[tuple[str, DataType]]:
    if task == "regression":
        return [(PREDICTION, FloatTensorType([None, 1]))]
    return [(LABEL, Int64TensorType([None])), (PROBABILITIES, FloatTensorType([None, n_classes]))]


def to_onnx(pipeline: Any, layout: FeatureLayout, task: str, n_classes: int) -> bytes:
    """Convert; classifiers are trained on class indices so ``label`` is an int64 index."""
    register_converters()
    options = {} if task == "regression" else {id(pipeline.steps[-1][1]): {"zipmap": False}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = convert_sklearn(
                pipeline,
                initial_types=initial_types(layout),
                final_types=_final_types(task, n_classes),
                options=options,
                target_opset=OPSETS,
            )
    except Exception as exc:  # skl2onnx raises bare RuntimeError/TypeError for unsupported steps
        estimator = type(pipeline.steps[-1][1]).__name__
        raise ExportError(f"cannot convert {estimator} to ONNX: {exc}".splitlines()[0]) from exc
    model.doc_string = "Ferry bundle graph: preprocessing and model"
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def input_specs_dtype(kind: str) -> str:
    return {"datetime": "float64", "categorical": "string", "text": "string"}.get(kind, "float32")


__all__ = ["InputSpec", "output_specs", "to_onnx"]
