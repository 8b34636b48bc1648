"""Which columns feed the model, how they are typed, and the preprocessing that encodes them.

The same typed frame feeds scikit-learn in training and ONNX Runtime at export: numeric and
boolean columns as float32, datetimes as float64 epoch seconds, categoricals as strings with
missing values spelled ``MISSING_CATEGORY``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, PolynomialFeatures

from ferry.core.signature import MISSING_CATEGORY, strings_with_missing
from ferry.core.spec import FeatureSpec
from ferry.training.text import text_values, vectorizer
from ferry.training.transformers import DatetimeParts, NumericPrep

TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t"})


@dataclass
class FeatureLayout:
    numeric: list[str] = field(default_factory=list)
    boolean: list[str] = field(default_factory=list)
    datetime: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.boolean, *self.datetime, *self.categorical, *self.text]

    def kind_of(self, column: str) -> str:
        for kind in ("numeric", "boolean", "datetime", "categorical", "text"):
            if column in getattr(self, kind):
                return kind
        raise KeyError(column)


def top_categories(values: pd.Series, limit: int) -> list[str]:
    counts = pd.Series(strings_with_missing(values.to_numpy())).value_counts()
    return sorted(str(c) for c in counts.index[:limit])


def plan_layout(
    frame: pd.DataFrame, kinds: dict[str, list[str]], max_categories: int
) -> FeatureLayout:
    layout = FeatureLayout(
        numeric=list(kinds.get("numeric", [])),
        boolean=list(kinds.get("boolean", [])),
        datetime=list(kinds.get("datetime", [])),
        categorical=list(kinds.get("categorical", [])),
        text=list(kinds.get("text", [])),
    )
    layout.categories = {c: top_categories(frame[c], max_categories) for c in layout.categorical}
    return layout


def as_bool(values: pd.Series) -> np.ndarray:
    """0/1 in float32 with NaN for missing, from bools, numbers (logged graph inputs) or words."""
    if values.dtype == bool:
        return values.to_numpy(dtype=np.float32)
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        return np.where(np.isnan(numbers), np.nan, numbers != 0).astype(np.float32)
    words = values.astype("string").str.strip().str.lower()
    out = words.isin(TRUE_WORDS).to_numpy(dtype=np.float32)
    out[values.isna().to_numpy()] = np.nan
    return out


def epoch_seconds(values: pd.Series) -> np.ndarray:
    """UTC epoch seconds; numbers are taken as epoch seconds already (the prediction log's)."""
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    stamps = pd.to_datetime(values, utc=True, errors="coerce")
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return seconds.to_numpy(dtype=np.float64, na_value=np.nan)


def model_frame(frame: pd.DataFrame, layout: FeatureLayout) -> pd.DataFrame:
    """The feature columns in graph dtypes, in layout order."""
    typed: dict[str, np.ndarray] = {}
    for column in layout.numeric:
        typed[column] = pd.to_numeric(frame[column], errors="coerce").to_numpy(
            dtype=np.float32, na_value=np.nan
        )
    for column in layout.boolean:
        typed[column] = as_bool(frame[column])
    for column in layout.datetime:
        typed[column] = epoch_seconds(frame[column])
    for column in layout.categorical:
        typed[column] = strings_with_missing(frame[column].to_numpy())
    for column in layout.text:
        typed[column] = text_values(frame[column].to_numpy())
    return pd.DataFrame(typed, index=frame.index)


def feeds(typed: pd.DataFrame) -> dict[str, np.ndarray]:
    """ONNX Runtime inputs: one ``[n, 1]`` array per column."""
    return {c: typed[c].to_numpy().reshape(-1, 1) for c in typed.columns}


def _numeric_prep(spec: FeatureSpec) -> NumericPrep:
    return NumericPrep(spec.impute, spec.clip_quantiles, spec.missing_indicators, spec.scale)


def _encoder(layout: FeatureLayout, spec: FeatureSpec) -> OneHotEncoder | OrdinalEncoder:
    categories = [layout.categories[c] for c in layout.categorical]
    if spec.encoding == "ordinal":
        return OrdinalEncoder(
            categories=categories,
            handle_unknown="use_encoded_value",
            unknown_value=-1,
            dtype=np.float32,
        )
    # Unseen categories encode as all zeros: served, and counted by monitoring.
    return OneHotEncoder(
        categories=categories, handle_unknown="ignore", sparse_output=False, dtype=np.float32
    )


def build_preprocessor(layout: FeatureLayout, spec: FeatureSpec) -> Pipeline:
    parts: list[tuple[str, object, list[str] | str]] = []
    if layout.numeric or layout.boolean:
        parts.append(("numeric", _numeric_prep(spec), [*layout.numeric, *layout.boolean]))
    if layout.datetime:
        dated = Pipeline([("parts", DatetimeParts()), ("prep", _numeric_prep(spec))])
        parts.append(("datetime", dated, layout.datetime))
    if layout.categorical:
        parts.append(("categorical", _encoder(layout, spec), layout.categorical))
    # One vectorizer per text column, given the column as 1-D strings (a name, not a list).
    parts.extend((f"text_{c}", vectorizer(spec.text), c) for c in layout.text)
    # Text keeps the output sparse: thousands of TF-IDF columns, a few non-zero per row.
    sparse = 1.0 if layout.text else 0.0
    steps: list[tuple[str, object]] = [
        ("columns", ColumnTransformer(parts, sparse_threshold=sparse))
    ]
    if spec.interactions:
        steps.append(
            ("interactions", PolynomialFeatures(2, interaction_only=True, include_bias=False))
        )
    if spec.pca_components:
        steps.append(("pca", PCA(n_components=spec.pca_components, random_state=0)))
    return Pipeline(steps)


__all__ = ["MISSING_CATEGORY", "FeatureLayout", "build_preprocessor", "feeds", "model_frame"]
