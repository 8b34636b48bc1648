"""One served model version: bundle, ONNX Runtime session, batcher and output shaping."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferry.core.bundle import MODEL, BundleManifest, verify_bundle
from ferry.core.protocol import SIGNATURE_DATATYPE, encode_tensor
from ferry.errors import BundleError, SignatureError
from ferry.serving.batching import BatchConfig, Batcher
from ferry.serving.inputs import Feeds, InputQuality, measure_quality
from ferry.serving.runtime import OnnxModel

if TYPE_CHECKING:
    from ferry.serving.images import ImageInputs

LABEL_OUTPUT = "label"
PROBA_OUTPUT = "probabilities"


class LoadedModel:
    """A verified bundle ready to serve. ``in_flight`` lets the pool unload it only when idle."""

    def __init__(
        self, bundle_dir: Path, version: int, config: BatchConfig, intra_threads: int = 1
    ) -> None:
        self.manifest: BundleManifest = verify_bundle(bundle_dir)
        self.name = self.manifest.name
        self.version = version
        self.runtime = OnnxModel(bundle_dir / MODEL, intra_threads)
        self.batcher = Batcher(self.runtime.run, config)
        self.labels = np.asarray(self.manifest.labels or [], dtype=object)
        self.in_flight = 0
        self.quality = InputQuality()
        # Image models decode PNG/JPEG per their manifest; tabular ones keep the column path.
        self.images: ImageInputs | None = _image_inputs(self.manifest)

    @property
    def signature(self):  # type: ignore[no-untyped-def]
        return self.manifest.signature

    def warm_up(self) -> None:
        """Run a few rows through the graph so the first request does not pay for allocation."""
        feeds = {s.name: sample_column(s) for s in self.manifest.signature.inputs}
        for _ in range(3):
            self.runtime.run(feeds)

    async def start(self) -> None:
        await self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()

    async def run(self, feeds: Feeds, rows: int) -> dict[str, np.ndarray]:
        # Quality counting happens in monitoring, off the request's critical path.
        self.in_flight += 1
        try:
            return await self.batcher.submit(feeds, rows)
        finally:
            self.in_flight -= 1

    def count_quality(self, feeds: Feeds) -> InputQuality:
        if self.images is not None:  # monitoring gets image summaries, not graph inputs
            return InputQuality()
        seen = measure_quality(self.manifest.signature, feeds)
        self._count(seen)
        return seen

    def _count(self, seen: InputQuality) -> None:
        for mine, theirs in (
            (self.quality.missing, seen.missing),
            (self.quality.out_of_range, seen.out_of_range),
            (self.quality.unseen, seen.unseen),
        ):
            for name, count in theirs.items():
                mine[name] = mine.get(name, 0) + count

    def decide(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Label strings, with the bundle's threshold for binary tasks."""
        proba = outputs[PROBA_OUTPUT]
        if self.manifest.task == "binary" and self.manifest.threshold is not None:
            index = (proba[:, 1] >= self.manifest.threshold).astype(np.int64)
        else:
            index = outputs[LABEL_OUTPUT].reshape(-1)
        return self.labels[index]

    def v2_outputs(
        self, outputs: dict[str, np.ndarray], wanted: list[str] | None
    ) -> list[dict[str, Any]]:
        shaped = dict(outputs)
        if self.manifest.task != "regression":
            shaped[LABEL_OUTPUT] = self.decide(outputs)
        names = wanted or list(shaped)
        unknown = [n for n in names if n not in shaped]
        if unknown:
            raise SignatureError(
                f"requested output(s) {unknown} do not exist; this model has {list(shaped)}"
            )
        return [encode_tensor(n, shaped[n]) for n in names]

    def predictions(self, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        if self.manifest.task == "regression":
            values = next(iter(outputs.values())).reshape(-1).tolist()
            return [{"prediction": v} for v in values]
        labels = self.decide(outputs).tolist()
        proba = outputs[PROBA_OUTPUT].tolist()
        names = self.labels.tolist()
        return [
            {"label": label, "probabilities": dict(zip(names, row, strict=True))}
            for label, row in zip(labels, proba, strict=True)
        ]

    def metadata(self) -> dict[str, Any]:
        def tensor(spec: Any) -> dict[str, Any]:
            return {
                "name": spec.name,
                "datatype": SIGNATURE_DATATYPE[spec.dtype],
                "shape": list(spec.shape),
            }

        outputs = [tensor(o) for o in self.manifest.signature.outputs]
        if self.manifest.task != "regression":
            outputs = [
                {**o, "datatype": "BYTES"} if o["name"] == LABEL_OUTPUT else o for o in outputs
            ]
        return {
            "name": self.name,
            "versions": [str(self.version)],
            "platform": "onnxruntime_onnx",
            "inputs": [tensor(i) for i in self.manifest.signature.inputs],
            "outputs": outputs,
            "parameters": {
                "task": self.manifest.task,
                "labels": self.manifest.labels,
                "threshold": self.manifest.threshold,
                **_preprocessing(self.manifest),
            },
        }


def _image_inputs(manifest: BundleManifest) -> ImageInputs | None:
    if manifest.preprocessing is None:
        return None
    try:
        from ferry.serving.images import ImageInputs
    except ImportError as exc:
        raise BundleError(
            f"model {manifest.name!r} takes images, which need Pillow: pip install pillow"
        ) from exc
    return ImageInputs(manifest.preprocessing)


def _preprocessing(manifest: BundleManifest) -> dict[str, Any]:
    prep = manifest.preprocessing
    return {} if prep is None else {"preprocessing": prep.model_dump(mode="json")}


def sample_column(spec: Any) -> np.ndarray:
    """Four valid rows for one input (warm-up calls and probes): its first category, its
    minimum, or a blank image."""
    if spec.kind == "image":
        return np.zeros((4, *spec.shape[1:]), dtype=np.float32)
    if spec.dtype == "string":
        first = (spec.categories or ["__missing__"])[0]
        return np.asarray([[first]] * 4, dtype=object)
    value = spec.min if spec.min is not None else 0.0
    return np.full((4, 1), value, dtype=np.float64 if spec.dtype == "float64" else np.float32)
