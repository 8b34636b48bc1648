"""What the monitoring report says: a prediction log turned into columns, drift over the period
and per window, quality on labelled rows, data-quality counts, and the JSON document.

Drift uses the same test, bins, Holm correction and alarm rule as live monitoring
(``ferry.monitoring.drift``), so the report explains the alarms operators saw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ferry.core.bundle import BundleManifest
from ferry.core.signature import MISSING_CATEGORY, InputSpec, Signature, strings_with_missing
from ferry.core.stats import ReferenceStats
from ferry.errors import DataError
from ferry.monitoring.drift import PREDICTION, DriftConfig, DriftDetector, FeatureDrift, holm
from ferry.monitoring.drift import test_feature as drift_test
from ferry.monitoring.feedback import FeedbackWindow
from ferry.serving.inputs import measure_quality

# Rows become numpy columns this many at a time: a long log never sits in memory as Python
# dicts (the log's files are bounded, but can still hold millions of rows).
CHUNK_ROWS = 20_000


@dataclass
class LogColumns:
    """The log's rows as columns, sorted by time."""

    ids: np.ndarray
    times: np.ndarray
    versions: np.ndarray
    inputs: dict[str, np.ndarray]
    predictions: np.ndarray
    scores: np.ndarray  # NaN where the row has no score

    def __len__(self) -> int:
        return len(self.times)


def tabular_inputs(signature: Signature) -> list[InputSpec]:
    """One value per row: tensor inputs (images) have no per-feature statistics to report."""
    return [s for s in signature.inputs if s.shape in ([-1, 1], [-1])]


def _column(spec: InputSpec, values: list[Any]) -> np.ndarray:
    if spec.dtype == "string":
        return strings_with_missing(values)
    return np.asarray(values, dtype=float)  # None -> NaN


def _chunk(rows: list[dict[str, Any]], specs: list[InputSpec]) -> LogColumns:
    def inputs(name: str) -> list[Any]:
        return [row.get("inputs", {}).get(name) for row in rows]

    return LogColumns(
        ids=np.asarray([str(row.get("id", "")) for row in rows], dtype=object),
        times=np.asarray([row.get("time", 0.0) for row in rows], dtype=float),
        versions=np.asarray([int(row.get("version", 0)) for row in rows], dtype=np.int64),
        inputs={s.name: _column(s, inputs(s.name)) for s in specs},
        predictions=np.asarray([row.get("prediction") for row in rows], dtype=object),
        scores=np.asarray([row.get("score") for row in rows], dtype=float),
    )


def _join(parts: list[LogColumns]) -> LogColumns:
    order = np.argsort(np.concatenate([p.times for p in parts]), kind="stable")

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays)[order]

    return LogColumns(
        ids=cat([p.ids for p in parts]),
        times=cat([p.times for p in parts]),
        versions=cat([p.versions for p in parts]),
        inputs={n: cat([p.inputs[n] for p in parts]) for n in parts[0].inputs},
        predictions=cat([p.predictions for p in parts]),
        scores=cat([p.scores for p in parts]),
    )


def read_columns(rows: Iterable[dict[str, Any]], specs: list[InputSpec]) -> LogColumns:
    parts: list[LogColumns] = []
    pending: list[dict[str, Any]] = []
    for row in rows:
        pending.append(row)
        if len(pending) >= CHUNK_ROWS:
            parts.append(_chunk(pending, specs))
            pending = []
    if pending or not parts:
        parts.append(_chunk(pending, specs))
    return _join(parts)


# ----------------------------------------------------------------------------- analysis


def prediction_column(manifest: BundleManifest, columns: LogColumns) -> np.ndarray:
    """The prediction as the bundle's reference holds it (see ``monitor._prediction_column``):
    the positive score (binary), the class index as a string (multiclass), the value
    (regression)."""
    if manifest.task == "binary":
        return columns.scores
    if manifest.task == "multiclass":
        index = {label: str(i) for i, label in enumerate(manifest.labels or [])}
        return np.asarray(
            [index.get(str(p), MISSING_CATEGORY) for p in columns.predictions], object
        )
    return np.asarray([np.nan if p is None else p for p in columns.predictions], dtype=float)


def drift_columns(manifest: BundleManifest, columns: LogColumns) -> dict[str, np.ndarray]:
    reference = manifest.reference or ReferenceStats()
    known = {**reference.numeric, **reference.categorical}
    tested = {n: v for n, v in columns.inputs.items() if n in known}
    if reference.prediction is not None:
        tested[PREDICTION] = prediction_column(manifest, columns)
    return tested


def period_drift(reference: ReferenceStats, tested: Mapping[str, np.ndarray]) -> list[FeatureDrift]:
    """Every feature over the whole period, Holm-corrected, smallest p-value first."""
    refs = DriftDetector(reference).references()
    results = [drift_test(name, refs[name], values) for name, values in tested.items()]
    holm(results, DriftConfig().alpha)
    return sorted(results, key=lambda r: (r.p_value, -r.statistic))


def drift_windows(
    reference: ReferenceStats, tested: Mapping[str, np.ndarray], times: np.ndarray, window: int
) -> list[dict[str, Any]]:
    """Consecutive windows of ``window`` rows, tested and alarmed exactly as a server does."""
    detector = DriftDetector(reference, DriftConfig(window=window))
    found = []
    for index, result in enumerate(detector.add(tested) if tested else []):
        start = index * window
        found.append(
            {
                "start": float(times[start]),
                "end": float(times[start + window - 1]),
                "rows": result.rows,
                "drifted_share": result.drifted_share,
                "drifted": result.drifted,
                "alarm": result.alarm,
                "drifted_features": [f.feature for f in result.features if f.drifted],
            }
        )
    return found


def _truth(task: str, label: str) -> Any:
    if task != "regression":
        return str(label)
    try:
        return float(label)
    except ValueError:
        raise DataError(
            f"label {label!r} is not a number: a regression model's labels must be numeric"
        ) from None


def quality_windows(
    columns: LogColumns, labels: Mapping[str, str], task: str, window: int
) -> list[dict[str, Any]]:
    """Quality on labelled rows, in consecutive windows of ``window`` labelled rows."""
    matched = np.flatnonzero([str(i) in labels for i in columns.ids])
    found = []
    for start in range(0, len(matched), window):
        rows = matched[start : start + window]
        feedback = FeedbackWindow(len(rows))
        for i in rows:
            score = None if math.isnan(columns.scores[i]) else float(columns.scores[i])
            predicted = columns.predictions[i]
            feedback.add(_truth(task, labels[str(columns.ids[i])]), predicted, score)
        found.append(
            {
                "start": float(columns.times[rows[0]]),
                "end": float(columns.times[rows[-1]]),
                "metrics": feedback.metrics(),
            }
        )
    return found


def data_quality(specs: list[InputSpec], columns: LogColumns) -> dict[str, dict[str, int]]:
    """Missing, out-of-range and unseen counts per input, counted as the server counts them."""
    feeds = {s.name: columns.inputs[s.name] for s in specs}
    quality = measure_quality(Signature(inputs=specs, outputs=[]), feeds)
    return {
        s.name: {
            "missing": quality.missing.get(s.name, 0),
            "out_of_range": quality.out_of_range.get(s.name, 0),
            "unseen": quality.unseen.get(s.name, 0),
        }
        for s in specs
    }


@dataclass
class Analysis:
    manifest: BundleManifest
    columns: LogColumns
    window: int
    tested: dict[str, np.ndarray]  # the columns drift was tested on, by feature
    features: list[FeatureDrift]
    windows: list[dict[str, Any]]
    quality: list[dict[str, Any]] | None
    labels_given: int
    data_quality: dict[str, dict[str, int]]


def analyse(
    columns: LogColumns, manifest: BundleManifest, labels: Mapping[str, str] | None, window: int
) -> Analysis:
    tested = drift_columns(manifest, columns)
    reference = manifest.reference
    return Analysis(
        manifest=manifest,
        columns=columns,
        window=window,
        tested=tested,
        features=period_drift(reference, tested) if reference else [],
        windows=drift_windows(reference, tested, columns.times, window) if reference else [],
        quality=None if labels is None else quality_windows(columns, labels, manifest.task, window),
        labels_given=len(labels or {}),
        data_quality=data_quality(tabular_inputs(manifest.signature), columns),
    )


def versions_seen(columns: LogColumns) -> dict[str, int]:
    found, counts = np.unique(columns.versions, return_counts=True)
    return {str(v): int(c) for v, c in zip(found.tolist(), counts.tolist(), strict=True)}


def _finite(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def document(title: str, analysis: Analysis) -> dict[str, Any]:
    """The report's numbers for scripts; times are epoch seconds like the log's."""
    columns = analysis.columns
    return _finite(
        {
            "title": title,
            "model": analysis.manifest.name,
            "task": analysis.manifest.task,
            "rows": len(columns),
            "versions": versions_seen(columns),
            "first": float(columns.times[0]),
            "last": float(columns.times[-1]),
            "alpha": DriftConfig().alpha,
            "window": analysis.window,
            "features": [asdict(f) for f in analysis.features],
            "drifted": [f.feature for f in analysis.features if f.drifted],
            "windows": analysis.windows,
            "labels_given": analysis.labels_given,
            "quality": analysis.quality,
            "data_quality": analysis.data_quality,
        }
    )
