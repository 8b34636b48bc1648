"""Score registered bundles on a data frame, through their ONNX graphs.

Champion and challenger are judged by what would serve: the graphs, fed exactly as the server
feeds them, never by native models (the champion's may not exist any more).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ferry.core.bundle import BundleManifest, read_manifest
from ferry.core.signature import InputSpec, strings_with_missing
from ferry.core.stats import single_call_p99_ms
from ferry.errors import DataError
from ferry.serving.runtime import OnnxModel
from ferry.training.features import as_bool, epoch_seconds


def _column(spec: InputSpec, values: pd.Series) -> np.ndarray:
    if spec.kind == "categorical" or spec.dtype == "string":
        column = strings_with_missing(values.to_numpy())
    elif spec.kind == "boolean":
        column = as_bool(values)
    elif spec.kind == "datetime":
        column = epoch_seconds(values)
    else:
        column = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    dtype = np.float64 if spec.dtype == "float64" else np.float32
    return column.reshape(-1, 1) if column.dtype == object else column.astype(dtype).reshape(-1, 1)


def frame_feeds(manifest: BundleManifest, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The graph's inputs from raw columns (or from logged, already typed ones)."""
    missing = [s.name for s in manifest.signature.inputs if s.name not in frame.columns]
    if missing:
        raise DataError(
            f"{manifest.name}: the data lacks input column(s) {missing} the model takes"
        )
    return {s.name: _column(s, frame[s.name]) for s in manifest.signature.inputs}


@dataclass
class BundleScorer:
    """One bundle's graph, loaded once; ``scores`` gives probabilities or regression values."""

    directory: Path

    def __post_init__(self) -> None:
        self.manifest = read_manifest(self.directory)
        self.model = OnnxModel(self.directory / "model.onnx", intra_threads=2)

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        outputs = self.model.run(frame_feeds(self.manifest, frame))
        if self.manifest.task == "regression":
            return np.asarray(next(iter(outputs.values())), dtype=np.float64).reshape(-1)
        return np.asarray(outputs["probabilities"], dtype=np.float64)

    def latency_p99_ms(self, frame: pd.DataFrame) -> float:
        """Single-row p99 over real rows, measured as the search measured its candidates."""
        rows = [frame_feeds(self.manifest, frame.iloc[[i]]) for i in range(min(len(frame), 20))]
        return single_call_p99_ms(self.model.run, rows)

    def size_mb(self) -> float:
        return (self.directory / "model.onnx").stat().st_size / 1e6
