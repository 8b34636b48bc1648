"""The ``--sample`` an imported model is checked on: its rows typed as the graph takes them,
and what the bundle learns from them (input ranges and categories, drift reference, metrics)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ferry.core.signature import NUMPY_DTYPES, InputSpec
from ferry.data.load import fingerprint, load_dataset
from ferry.errors import DataError
from ferry.export.manifest import input_specs
from ferry.training.features import FeatureLayout, model_frame, plan_layout

# Categories a sample may show per input: enough for monitoring to tell seen from unseen.
MAX_CATEGORIES = 1000


@dataclass(frozen=True)
class Sample:
    source: str
    features: pd.DataFrame
    target: pd.Series | None
    fingerprint: str
    rows: int


def load_sample(source: str, target: str | None, rows: int | None) -> Sample:
    frame = load_dataset(source, rows=rows)
    if target is not None and target not in frame.columns:
        raise DataError(
            f"--target {target!r} is not a column of --sample {source!r}; its columns are "
            f"{list(frame.columns)[:12]}"
        )
    if target is not None:
        frame = frame.dropna(subset=[target])
    if frame.empty:
        raise DataError(f"--sample {source!r} has no rows (with a --target value); pass rows")
    features = frame.drop(columns=[target]) if target is not None else frame
    labels = frame[target] if target is not None else None
    return Sample(source, features, labels, fingerprint(frame), len(frame))


def _layout(sample: Sample, inputs: list[InputSpec]) -> FeatureLayout:
    missing = [s.name for s in inputs if s.name not in sample.features.columns]
    if missing:
        raise DataError(
            f"--sample {sample.source!r} lacks column(s) {missing} that the model takes (its "
            f"inputs are {[s.name for s in inputs]}); pass a sample with these columns, or "
            "--signature sig.json naming the model's inputs as the sample names them"
        )
    kinds: dict[str, list[str]] = {}
    for spec in inputs:
        kinds.setdefault(spec.kind, []).append(spec.name)
    return plan_layout(sample.features, kinds, MAX_CATEGORIES)


def typed_sample(sample: Sample, inputs: list[InputSpec]) -> tuple[FeatureLayout, pd.DataFrame]:
    """The sample's input columns typed as training types them (float32 numbers, float64
    epoch-second datetimes, strings with missing values spelled ``__missing__``)."""
    layout = _layout(sample, inputs)
    return layout, model_frame(sample.features, layout)


def graph_feeds(inputs: list[InputSpec], typed: pd.DataFrame) -> dict[str, np.ndarray]:
    """One ``[n, 1]`` array per input, in the dtype the bundle's graph declares."""
    return {
        s.name: typed[s.name].to_numpy().astype(NUMPY_DTYPES[s.dtype]).reshape(-1, 1)
        for s in inputs
    }


def with_sample_facts(
    inputs: list[InputSpec], layout: FeatureLayout, typed: pd.DataFrame
) -> list[InputSpec]:
    """Inputs with the ranges, categories and missing values the sample shows, where the inputs
    do not say them already; a model that met missing values in the sample accepts them."""
    seen = {s.name: s for s in input_specs(layout, typed)}
    filled = []
    for spec in inputs:
        facts = seen[spec.name]
        filled.append(
            spec.model_copy(
                update={
                    "min": spec.min if spec.min is not None else facts.min,
                    "max": spec.max if spec.max is not None else facts.max,
                    "categories": spec.categories or facts.categories,
                    "nullable": spec.nullable or facts.nullable,
                }
            )
        )
    return filled


def synthetic_feeds(inputs: list[InputSpec], rows: int = 4) -> dict[str, np.ndarray]:
    """Rows made up from the signature alone: whether the graph runs at all, without a sample."""
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        if spec.dtype == "string":
            value: object = (spec.categories or ["__missing__"])[0]
        else:
            value = spec.min if spec.min is not None else 0.0
        feeds[spec.name] = np.full((rows, 1), value, dtype=NUMPY_DTYPES[spec.dtype])
    return feeds
