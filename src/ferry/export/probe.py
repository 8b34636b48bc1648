"""Export a search candidate and measure what production would pay for it."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ferry.export.onnx import to_onnx
from ferry.export.parity import session, single_row_latency_ms
from ferry.training.features import FeatureLayout


class CandidateProbe:
    """Callable handed to the search: pipeline -> (p99 single-row latency ms, size MB)."""

    def __init__(self, layout: FeatureLayout, task: str, n_classes: int, sample: pd.DataFrame):
        self.layout, self.task, self.n_classes = layout, task, n_classes
        self.sample = sample.iloc[:20]

    def __call__(self, pipeline: Any) -> tuple[float, float]:
        model_bytes = to_onnx(pipeline, self.layout, self.task, self.n_classes)
        latency = single_row_latency_ms(session(model_bytes), self.sample)
        return latency, len(model_bytes) / 1e6
