"""INT8 copies of a bundle's graph with ONNX Runtime's quantization, scored before and after.

``dynamic`` stores weights as INT8 and quantizes activations on the fly; ``static`` also fixes
activation ranges from calibration rows (the spec's validation split) and writes a QDQ graph.
Both graphs are scored by ONNX Runtime on the same test rows, so the drop the CLI judges is
the one a server would show.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ferry.core.bundle import BundleManifest, Lineage, Metrics
from ferry.core.spec import LOWER_IS_BETTER
from ferry.errors import ExportError
from ferry.evaluation.metrics import classification_metrics, regression_metrics
from ferry.export.parity import session

Method = Literal["dynamic", "static"]
METHODS: tuple[Method, ...] = ("dynamic", "static")
Feeds = dict[str, np.ndarray]
SCORE_BATCH = 1024


@dataclass(frozen=True)
class Holdout:
    """Rows to calibrate on (batches of feeds) and test rows with their true values."""

    calibration: list[Feeds]
    test: Feeds
    y_test: np.ndarray


@dataclass(frozen=True)
class Quantized:
    model_bytes: bytes
    method: Method
    metric: str
    before: dict[str, float]
    after: dict[str, float]
    agreement: float  # share of test rows whose prediction is unchanged
    size_mb_fp32: float

    @property
    def size_mb_int8(self) -> float:
        return len(self.model_bytes) / 1e6

    @property
    def drop(self) -> float:
        """How much worse the metric got (negative: it improved)."""
        sign = -1.0 if self.metric in LOWER_IS_BETTER else 1.0
        return sign * (self.before[self.metric] - self.after[self.metric])


def _reader(batches: list[Feeds]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches: Iterator[Feeds] = iter(batches)

        def get_next(self) -> Feeds | None:
            return next(self.batches, None)

    return Reader()


def quantize_graph(model_bytes: bytes, method: Method, calibration: list[Feeds]) -> bytes:
    """The INT8 graph; ``ExportError`` if ONNX Runtime cannot quantize it."""
    if method == "static" and not calibration:
        raise ExportError("static quantization needs calibration rows; the holdout has none")
    with tempfile.TemporaryDirectory(prefix="ferry-quantize-") as tmp:
        source, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model_bytes)
        try:
            _quantize_file(source, out, method, calibration)
        except Exception as exc:  # ORT's quantizer raises untyped errors for unsupported graphs
            raise ExportError(
                f"ONNX Runtime cannot quantize this graph ({method}): "
                f"{str(exc).splitlines()[0][:200]}"
            ) from exc
        return out.read_bytes()


def _quantize_file(source: Path, out: Path, method: Method, calibration: list[Feeds]) -> None:
    # Imported here: the quantizer costs a quarter second to import and only this needs it.
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    prepared = source.with_name("prepared.onnx")
    # Shape inference and graph fusions first, as ONNX Runtime recommends.
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    if method == "dynamic":
        quantize_dynamic(prepared, out, weight_type=QuantType.QUInt8)
        return
    quantize_static(
        prepared,
        out,
        _reader(calibration),
        quant_format=QuantFormat.QDQ,  # QuantizeLinear/DequantizeLinear pairs: ORT fuses them
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def _outputs(model_bytes: bytes, feeds: Feeds) -> dict[str, np.ndarray]:
    sess = session(model_bytes, threads=2)
    names = [o.name for o in sess.get_outputs()]
    rows = len(next(iter(feeds.values())))
    parts = [
        sess.run(names, {k: v[i : i + SCORE_BATCH] for k, v in feeds.items()})
        for i in range(0, rows, SCORE_BATCH)
    ]
    return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}


def score_graph(
    model_bytes: bytes, holdout: Holdout, manifest: BundleManifest
) -> tuple[dict[str, float], np.ndarray]:
    """Test metrics of a graph run by ONNX Runtime, and its predictions (labels or values)."""
    outputs = _outputs(model_bytes, holdout.test)
    if manifest.task == "regression":
        prediction = next(iter(outputs.values())).reshape(-1)
        return regression_metrics(holdout.y_test, prediction), prediction
    labels = manifest.labels or []
    proba = outputs["probabilities"]
    metrics = classification_metrics(holdout.y_test, proba, labels, manifest.threshold)
    if manifest.task == "binary" and manifest.threshold is not None:
        return metrics, (proba[:, 1] >= manifest.threshold).astype(np.int64)
    return metrics, proba.argmax(axis=1)


def quantize(
    model_bytes: bytes, method: Method, holdout: Holdout, manifest: BundleManifest, metric: str
) -> Quantized:
    quantized = quantize_graph(model_bytes, method, holdout.calibration)
    before, predicted_before = score_graph(model_bytes, holdout, manifest)
    after, predicted_after = score_graph(quantized, holdout, manifest)
    if metric not in before:
        raise ExportError(f"metric {metric!r} is not computed for task {manifest.task!r}")
    if manifest.task == "regression":
        scale = max(float(np.abs(predicted_before).max(initial=0.0)), 1.0)
        agreement = float(np.mean(np.abs(predicted_after - predicted_before) <= 1e-3 * scale))
    else:
        agreement = float(np.mean(predicted_after == predicted_before))
    return Quantized(quantized, method, metric, before, after, agreement, len(model_bytes) / 1e6)


def quantized_manifest(
    manifest: BundleManifest, result: Quantized, parent_version: int | None
) -> BundleManifest:
    """The FP32 manifest with the INT8 graph's test metrics, the comparison and lineage."""
    comparison = {
        f"{result.metric}_fp32": result.before[result.metric],
        f"{result.metric}_int8": result.after[result.metric],
        "drop": result.drop,
        "agreement": result.agreement,
        "size_mb_fp32": result.size_mb_fp32,
        "size_mb_int8": result.size_mb_int8,
    }
    lineage: Lineage = manifest.lineage.model_copy(
        update={"parent_version": parent_version, "quantization": result.method}
    )
    return manifest.model_copy(
        update={
            "metrics": Metrics(
                cv=manifest.metrics.cv, test=_finite(result.after), quantization=comparison
            ),
            "lineage": lineage,
            # Parity was torch (or scikit-learn) against the FP32 graph; the INT8 graph is
            # judged by its metric instead.
            "parity": {"agreement_with_fp32": result.agreement},
            "files": {},
        }
    )


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
