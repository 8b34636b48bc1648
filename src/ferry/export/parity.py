"""Run an exported graph with ONNX Runtime: parity against the original, latency, size."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

from ferry.core.stats import single_call_p99_ms
from ferry.errors import ExportError
from ferry.training.features import feeds

PROBA_TOLERANCE = 1e-5


def session(model_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def single_row_latency_ms(sess: ort.InferenceSession, typed: pd.DataFrame) -> float:
    """p99 of single-row calls, cycling over real rows."""
    rows = [feeds(typed.iloc[[i]]) for i in range(min(len(typed), 20))]
    return single_call_p99_ms(lambda row: sess.run(None, row), rows)


def check_parity(
    model_bytes: bytes, pipeline: Any, typed: pd.DataFrame, task: str
) -> dict[str, float]:
    """Compare ONNX Runtime with the fitted pipeline on ``typed``; raise ``ExportError`` if off."""
    outputs = session(model_bytes, threads=2).run(None, feeds(typed))
    if task == "regression":
        expected = np.asarray(pipeline.predict(typed), dtype=np.float64).reshape(-1)
        diff = float(np.max(np.abs(outputs[0].reshape(-1) - expected), initial=0.0))
        scale = float(np.max(np.abs(expected), initial=1.0))
        if diff > PROBA_TOLERANCE * max(scale, 1.0):
            raise ExportError(
                f"parity check failed: ONNX predictions differ by up to {diff:.3g} "
                f"(allowed {PROBA_TOLERANCE * max(scale, 1.0):.3g})"
            )
        return {"max_abs_diff": diff, "rows": float(len(typed))}
    labels, proba = outputs
    diff = float(np.max(np.abs(proba - pipeline.predict_proba(typed)), initial=0.0))
    mismatched = int(np.sum(labels.reshape(-1) != pipeline.predict(typed)))
    if diff > PROBA_TOLERANCE or mismatched:
        raise ExportError(
            f"parity check failed on {len(typed)} rows: max |Δprobability| = {diff:.3g} "
            f"(allowed {PROBA_TOLERANCE:g}), {mismatched} label(s) differ (allowed 0)"
        )
    return {"max_abs_diff": diff, "label_mismatches": 0.0, "rows": float(len(typed))}
