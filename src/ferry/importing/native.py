"""Models trained elsewhere, read from their files and converted to ONNX: scikit-learn
pipelines (pickle/joblib, under --trust), LightGBM boosters (.txt) and XGBoost boosters
(.json/.ubj). Each comes with a native predictor, so the converted graph is checked against it.

Native predictors take the typed frame export's parity check feeds the graph with, and answer
as Ferry's graphs do: class indices from ``predict``, an ``[n, k]`` matrix from
``predict_proba``, values from ``predict`` for regressors.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pandas as pd

from ferry.core.signature import InputSpec
from ferry.errors import ExportError
from ferry.importing.columns import Hints, plan_inputs
from ferry.importing.sources import ModelFile

ML_OPSET = 15  # the highest onnxmltools' own converters support


@dataclass
class Source:
    """A model read from its file: its graph as converted, and what the file says about it."""

    graph: onnx.ModelProto
    inputs: list[InputSpec]
    task: str | None  # classification | regression, when the model says
    classes: list[Any] | None  # the label output's values, in probability-column order
    native: Any | None  # predict / predict_proba on a typed frame
    estimator: str
    libraries: dict[str, str] = field(default_factory=dict)


class BoosterNative:
    """A booster's own predictions, shaped like a Ferry graph's outputs."""

    def __init__(self, raw: Callable[[np.ndarray], np.ndarray], names: list[str], task: str):
        self.raw = raw
        self.names = names
        self.task = task

    def _scores(self, typed: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.raw(typed[self.names].to_numpy(dtype=np.float32)))

    def predict_proba(self, typed: pd.DataFrame) -> np.ndarray:
        scores = self._scores(typed)
        return np.column_stack([1 - scores, scores]) if scores.ndim == 1 else scores

    def predict(self, typed: pd.DataFrame) -> np.ndarray:
        if self.task == "regression":
            return self._scores(typed).reshape(-1)
        return np.argmax(self.predict_proba(typed), axis=1)


class SklearnNative:
    """A fitted estimator or pipeline, fed the columns it was fitted on."""

    def __init__(self, model: Any, names: list[str], classes: list[Any] | None) -> None:
        self.model = model
        self.names = names
        self.index = None if classes is None else {c: i for i, c in enumerate(classes)}
        self.by_name = hasattr(model, "feature_names_in_")

    def _x(self, typed: pd.DataFrame) -> Any:
        frame = typed[self.names]
        return frame if self.by_name else frame.to_numpy()

    def predict_proba(self, typed: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict_proba(self._x(typed)))

    def predict(self, typed: pd.DataFrame) -> np.ndarray:
        predicted = self.model.predict(self._x(typed))
        if self.index is None:
            return np.asarray(predicted)
        return np.asarray([self.index[_plain(v)] for v in predicted], dtype=np.int64)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _matrix_type(count: int) -> list[tuple[str, Any]]:
    from onnxmltools.convert.common.data_types import FloatTensorType

    return [("input", FloatTensorType([None, count]))]


# ---- LightGBM ---------------------------------------------------------------------------


def _lightgbm_task(objective: str) -> tuple[str, int]:
    if objective.startswith("binary"):
        return "classification", 2
    if objective.startswith(("multiclass", "softmax")):
        return "classification", 0
    if objective.startswith(("regression", "poisson", "gamma", "quantile", "huber", "tweedie")):
        return "regression", 0
    raise ExportError(
        f"LightGBM objective {objective!r} cannot be imported: Ferry serves binary, multiclass "
        "and regression boosters"
    )


def lightgbm_source(booster: Any, hints: Hints) -> Source:
    import lightgbm
    from onnxmltools import convert_lightgbm

    from ferry.export.converters import lightgbm_convert

    task, classes = _lightgbm_task(str(booster.dump_model().get("objective", "")))
    classes = classes or int(booster.num_model_per_iteration())
    inputs = plan_inputs(
        booster.feature_name(), booster.num_feature(), hints, nullable=True, generic="Column_"
    )
    # Ferry's converter rounds split thresholds down to float32, keeping LightGBM's sides.
    custom = {"LgbmClassifier": lightgbm_convert, "LgbmRegressor": lightgbm_convert}
    graph = _converted(
        lambda: convert_lightgbm(
            booster,
            initial_types=_matrix_type(booster.num_feature()),
            zipmap=False,
            target_opset=ML_OPSET,
            custom_conversion_functions=custom,
        ),
        "LightGBM booster",
    )
    names = [s.name for s in inputs]
    return Source(
        graph,
        inputs,
        task,
        list(range(classes)) if task == "classification" else None,
        BoosterNative(booster.predict, names, task),
        "lightgbm.Booster",
        {"lightgbm": lightgbm.__version__},
    )


def lightgbm_file(model: ModelFile, hints: Hints) -> Source:
    import lightgbm

    try:
        booster = lightgbm.Booster(model_str=model.data.decode())
    except (UnicodeDecodeError, lightgbm.basic.LightGBMError) as exc:
        raise ExportError(
            f"{model.path.name!r} is not a LightGBM text model ({str(exc)[:120]}); save one with "
            "booster.save_model('model.txt'), or pass the right --format"
        ) from exc
    return lightgbm_source(booster, hints)


# ---- XGBoost ----------------------------------------------------------------------------


def _xgboost_task(config: dict[str, Any]) -> tuple[str, int]:
    objective = str(config["learner"]["objective"]["name"])
    if objective == "binary:logistic":
        return "classification", 2
    if objective == "multi:softprob":
        return "classification", int(config["learner"]["learner_model_param"]["num_class"])
    if objective.startswith("reg:") and objective != "reg:logistic":
        return "regression", 0
    raise ExportError(
        f"XGBoost objective {objective!r} cannot be imported: Ferry serves binary:logistic, "
        "multi:softprob and reg:* boosters (multi:softmax gives no probabilities: retrain with "
        "multi:softprob)"
    )


def _xgboost_import() -> Any:
    try:
        import xgboost
    except ImportError as exc:
        raise ExportError(
            "importing an XGBoost model needs the xgboost package: pip install xgboost"
        ) from exc
    return xgboost


def xgboost_source(booster: Any, hints: Hints) -> Source:
    xgboost = _xgboost_import()
    from onnxmltools import convert_xgboost

    if any(t == "c" for t in booster.feature_types or []):
        raise ExportError(
            "the XGBoost booster has categorical features, which its ONNX converter does not "
            "support; encode them as numbers before training"
        )
    task, classes = _xgboost_task(json.loads(booster.save_config()))
    count = booster.num_features()
    inputs = plan_inputs(booster.feature_names, count, hints, nullable=True, generic="f")
    unnamed = booster.copy()
    unnamed.feature_names = None  # the converter reads features as f0, f1, ... in its dump
    graph = _converted(
        lambda: convert_xgboost(unnamed, initial_types=_matrix_type(count), target_opset=ML_OPSET),
        "XGBoost booster",
    )
    known = booster.feature_names

    def raw(x: np.ndarray) -> np.ndarray:
        return np.asarray(booster.predict(xgboost.DMatrix(x, feature_names=known)))

    return Source(
        graph,
        inputs,
        task,
        list(range(classes)) if task == "classification" else None,
        BoosterNative(raw, [s.name for s in inputs], task),
        "xgboost.Booster",
        {"xgboost": xgboost.__version__},
    )


def xgboost_file(model: ModelFile, hints: Hints) -> Source:
    xgboost = _xgboost_import()
    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(model.data))
    except xgboost.core.XGBoostError as exc:
        raise ExportError(
            f"{model.path.name!r} is not an XGBoost model ({str(exc).splitlines()[0][:120]}); "
            "save one with booster.save_model('model.json'), or pass the right --format"
        ) from exc
    return xgboost_source(booster, hints)


# ---- conversion -------------------------------------------------------------------------


def _converted(convert: Callable[[], onnx.ModelProto], what: str) -> onnx.ModelProto:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert()
    except ExportError:
        raise
    except Exception as exc:  # converters raise bare RuntimeError/TypeError/KeyError
        raise ExportError(
            f"cannot convert the {what} to ONNX: {str(exc).splitlines()[0][:200]}"
        ) from exc
