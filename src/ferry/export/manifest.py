"""What the manifest says about a model: its signature, reference statistics and lineage."""

from __future__ import annotations

import platform
from importlib import metadata

import numpy as np
import pandas as pd

from ferry.core.signature import MISSING_CATEGORY, Dtype, InputSpec
from ferry.core.stats import (
    CategoricalReference,
    NumericReference,
    ReferenceStats,
    categorical_reference,
    numeric_reference,
)
from ferry.training.features import FeatureLayout

LIBRARIES = (
    "ferry-ml",
    "scikit-learn",
    "skl2onnx",
    "onnx",
    "onnxruntime",
    "lightgbm",
    "numpy",
    "pandas",
    "optuna",
)


TEXT_INPUT = (
    "free text; case-insensitive words of ASCII letters, digits, _ and inner apostrophes "
    "(other characters separate words); null is the empty text"
)


def _input(column: str, kind: str, values: pd.Series, layout: FeatureLayout) -> InputSpec:
    if kind == "text":
        return InputSpec(
            name=column, dtype="string", kind="text", nullable=True, description=TEXT_INPUT
        )
    if kind == "categorical":
        cats = [c for c in layout.categories[column] if c != MISSING_CATEGORY]
        return InputSpec(
            name=column, dtype="string", kind="categorical", nullable=True, categories=cats
        )
    array = values.to_numpy(dtype=np.float64)
    finite = array[np.isfinite(array)]
    lo = float(finite.min()) if finite.size else None
    hi = float(finite.max()) if finite.size else None
    dtype: Dtype = "float64" if kind == "datetime" else "float32"
    # Missing values are accepted only where training saw them: the imputer was fit for them.
    return InputSpec(
        name=column,
        dtype=dtype,
        kind=kind,  # type: ignore[arg-type]
        nullable=bool(np.isnan(array).any()),
        min=lo,
        max=hi,
    )


def input_specs(layout: FeatureLayout, typed_train: pd.DataFrame) -> list[InputSpec]:
    return [_input(c, layout.kind_of(c), typed_train[c], layout) for c in layout.columns]


def reference_stats(
    layout: FeatureLayout, typed_train: pd.DataFrame, prediction: np.ndarray, task: str
) -> ReferenceStats:
    stats = ReferenceStats()
    # Datetimes are left out: production time always moves past training time, so a drift test
    # on them would alarm forever; the model sees their parts (hour, weekday, month).
    # Text is left out too: a drift test needs per-row numbers (length, out-of-vocabulary share)
    # that the monitor does not compute from strings yet; the prediction reference covers it.
    for column in [*layout.numeric, *layout.boolean]:
        stats.numeric[column] = numeric_reference(typed_train[column].to_numpy(dtype=np.float64))
    for column in layout.categorical:
        stats.categorical[column] = categorical_reference(
            typed_train[column].to_numpy(), MISSING_CATEGORY
        )
    stats.prediction = _prediction_reference(prediction, task)
    return stats


def _prediction_reference(
    prediction: np.ndarray, task: str
) -> NumericReference | CategoricalReference:
    if task == "multiclass":
        return categorical_reference(prediction.astype(str), MISSING_CATEGORY)
    return numeric_reference(prediction.astype(np.float64))


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
