"""Pickled models (pickle or joblib, only under --trust): scikit-learn estimators and pipelines,
including those built from Ferry's own transformers and LightGBM/XGBoost's scikit-learn models,
converted with skl2onnx; pickled LightGBM and XGBoost boosters go to their own converters."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ferry.errors import ExportError
from ferry.export.converters import register_converters
from ferry.export.onnx import OPSETS
from ferry.importing.columns import Hints, plan_inputs
from ferry.importing.native import (
    SklearnNative,
    Source,
    lightgbm_source,
    xgboost_source,
)
from ferry.importing.sources import ModelFile, require_trust


def _unpickle(model: ModelFile) -> Any:
    import joblib

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # version-mismatch warnings: parity judges the model
            return joblib.load(model.stream)
    except Exception as exc:  # unpickling raises whatever the pickled code raises
        raise ExportError(
            f"cannot load {model.path.name!r} as a pickle: {str(exc).splitlines()[0][:200]}; "
            "load it with the library versions it was saved with"
        ) from exc


def pickle_source(model: ModelFile, hints: Hints, *, trust: bool, sha256: str | None) -> Source:
    require_trust(model, "a pickle", trust=trust, sha256=sha256)
    loaded = _unpickle(model)
    kind = f"{type(loaded).__module__}.{type(loaded).__name__}"
    if kind.startswith("lightgbm.") and kind.endswith("Booster"):
        return lightgbm_source(loaded, hints)
    if kind.startswith("xgboost.") and kind.endswith("Booster"):
        return xgboost_source(loaded, hints)
    if not hasattr(loaded, "predict") or not hasattr(loaded, "n_features_in_"):
        raise ExportError(
            f"{model.path.name!r} holds a {kind}, not a fitted scikit-learn estimator or "
            "pipeline, LightGBM or XGBoost model; pickle the fitted model itself"
        )
    return sklearn_source(loaded, hints)


def _final(model: Any) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else model


def _encoder_kind(transformer: Any) -> str | None:
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    from ferry.training.transformers import DatetimeParts

    if hasattr(transformer, "steps"):
        transformer = transformer.steps[0][1]
    if isinstance(transformer, DatetimeParts):
        return "datetime"
    categories = getattr(transformer, "categories_", [])
    if isinstance(transformer, OneHotEncoder | OrdinalEncoder) and any(
        np.asarray(c).dtype == object for c in categories
    ):
        return "categorical"
    return None


def _first_step(model: Any) -> Any:
    while hasattr(model, "steps"):  # pipelines nest: Ferry's preprocessor is one
        model = model.steps[0][1]
    return model


def pipeline_kinds(model: Any) -> dict[str, str]:
    """Column kinds a pipeline's column transformer implies: string encoders take categories,
    Ferry's DatetimeParts takes datetimes."""
    from sklearn.compose import ColumnTransformer

    first = _first_step(model)
    if not isinstance(first, ColumnTransformer):
        return {}
    kinds: dict[str, str] = {}
    for _, transformer, columns in first.transformers_:
        kind = _encoder_kind(transformer)
        if kind is not None and isinstance(columns, list | tuple | np.ndarray):
            kinds.update({c: kind for c in columns if isinstance(c, str)})
    return kinds


def _initial_types(model: Any, inputs: list[Any]) -> list[tuple[str, Any]]:
    """One typed input per column where a column transformer picks columns by name; otherwise
    one float matrix (skl2onnx feeds a bare estimator one input), split by the adapter."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer

    strings = any(s.dtype == "string" for s in inputs)
    if not strings and not isinstance(_first_step(model), ColumnTransformer):
        return [("input", FloatTensorType([None, len(inputs)]))]
    types = {"string": StringTensorType, "float64": DoubleTensorType}
    return [(s.name, types.get(s.dtype, FloatTensorType)([None, 1])) for s in inputs]


def _xgboost_convert(scope: Any, operator: Any, container: Any) -> None:
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

    # The converter reads features as f0, f1, ... in the booster's dump: hide the names meanwhile.
    booster = operator.raw_operator.get_booster()
    names = booster.feature_names
    booster.feature_names = None
    try:
        convert_xgboost(scope, operator, container)
    finally:
        booster.feature_names = names


def _register_xgboost() -> None:
    try:
        from xgboost import XGBClassifier, XGBRegressor
    except ImportError:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        _xgboost_convert,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        XGBRegressor,
        "XGBoostXGBRegressor",
        calculate_linear_regressor_output_shapes,
        _xgboost_convert,
    )


def _convert(model: Any, types: list[tuple[str, Any]]) -> Any:
    from skl2onnx import convert_sklearn

    register_converters()
    _register_xgboost()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert_sklearn(model, initial_types=types, target_opset=OPSETS)
    except Exception as exc:  # skl2onnx raises bare RuntimeError/TypeError for unknown steps
        name = type(_final(model)).__name__
        raise ExportError(
            f"cannot convert {name} to ONNX: {str(exc).splitlines()[0][:200]}; every step needs "
            "an skl2onnx converter (or pass --sample/--signature if a column's kind is wrong)"
        ) from exc


def _check_names(fitted: list[str], hints: Hints) -> None:
    given = [s.name for s in hints.signature or []]
    if given and fitted and given != fitted:
        raise ExportError(
            f"--signature names the inputs {given} but the pipeline was fitted on the columns "
            f"{fitted}; use the fitted names, in that order"
        )


def _task_and_classes(model: Any) -> tuple[str | None, list[Any] | None]:
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(model):
        return "classification", [
            c.item() if isinstance(c, np.generic) else c for c in model.classes_
        ]
    return ("regression" if is_regressor(model) else None), None


def _estimator_name(model: Any) -> str:
    name = type(_final(model)).__name__
    return f"Pipeline({name})" if hasattr(model, "steps") else name


def sklearn_source(model: Any, hints: Hints) -> Source:
    fitted = [str(n) for n in getattr(model, "feature_names_in_", [])]
    _check_names(fitted, hints)
    hints = Hints(hints.signature, hints.sample, {**hints.kinds, **pipeline_kinds(model)})
    count = int(model.n_features_in_)
    inputs = plan_inputs(fitted or None, count, hints, nullable=False, generic="x")
    task, classes = _task_and_classes(model)
    graph = _convert(model, _initial_types(model, inputs))
    native = SklearnNative(model, [s.name for s in inputs], classes)
    return Source(graph, inputs, task, classes, native, _estimator_name(model), {})
