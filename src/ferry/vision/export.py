"""The trained CNN to one ONNX graph, checked against torch with ONNX Runtime.

torch 2.13's default exporter (``dynamo=True``) needs onnxscript; the TorchScript exporter
(``dynamo=False``) ships with torch, works offline and handles this plain feed-forward network,
so it is used with an explicit opset and a dynamic batch dimension.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from ferry.core.bundle import ImagePreprocessing
from ferry.core.signature import InputSpec, OutputSpec
from ferry.errors import ExportError
from ferry.export.parity import session
from ferry.vision.fit import predict_proba
from ferry.vision.network import ImageClassifier, Served

OPSET = 17
LABEL, PROBABILITIES = "label", "probabilities"
# float32 convolutions summed in another order differ by ~1e-6; 1e-4 is a real disagreement.
PROBA_TOLERANCE = 1e-4


def to_onnx(network: ImageClassifier, prep: ImagePreprocessing) -> bytes:
    network.eval()
    example = torch.zeros(2, prep.channels, prep.height, prep.width)
    with tempfile.TemporaryDirectory(prefix="ferry-cnn-") as tmp:
        path = Path(tmp) / "model.onnx"
        _export(network, prep, example, path)
        model = onnx.load(path)
    model.doc_string = "Ferry bundle graph: image classifier (inputs normalised per manifest)"
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _export(
    network: ImageClassifier, prep: ImagePreprocessing, example: torch.Tensor, path: Path
) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                Served(network),
                (example,),
                path,
                dynamo=False,
                opset_version=OPSET,
                input_names=[prep.input],
                output_names=[LABEL, PROBABILITIES],
                dynamic_axes={prep.input: {0: "n"}, LABEL: {0: "n"}, PROBABILITIES: {0: "n"}},
            )
    except Exception as exc:  # torch raises many untyped errors for unsupported layers
        raise ExportError(f"cannot export the CNN to ONNX: {str(exc).splitlines()[0]}") from exc


def check_parity(
    model_bytes: bytes, network: ImageClassifier, prep: ImagePreprocessing, inputs: np.ndarray
) -> dict[str, float]:
    """ONNX Runtime against torch on ``inputs``: probabilities within ``PROBA_TOLERANCE`` and
    the same label for every image, or ``ExportError``."""
    labels, proba = session(model_bytes, threads=2).run(None, {prep.input: inputs})
    expected = predict_proba(network, inputs)
    diff = float(np.max(np.abs(proba - expected), initial=0.0))
    mismatched = int(np.sum(labels.reshape(-1) != expected.argmax(axis=1)))
    if diff > PROBA_TOLERANCE or mismatched:
        raise ExportError(
            f"parity check failed on {len(inputs)} images: max |Δprobability| = {diff:.3g} "
            f"(allowed {PROBA_TOLERANCE:g}), {mismatched} label(s) differ (allowed 0)"
        )
    return {"max_abs_diff": diff, "label_mismatches": 0.0, "rows": float(len(inputs))}


def signature_parts(prep: ImagePreprocessing, classes: int) -> tuple[InputSpec, list[OutputSpec]]:
    image = InputSpec(
        name=prep.input,
        dtype="float32",
        kind="image",
        shape=[-1, prep.channels, prep.height, prep.width],
        description=(
            f"{prep.color} {prep.height}x{prep.width} images: PNG/JPEG bytes, or values "
            "already normalised as the manifest's preprocessing says"
        ),
    )
    outputs = [
        OutputSpec(name=LABEL, dtype="int64", shape=[-1]),
        OutputSpec(name=PROBABILITIES, dtype="float32", shape=[-1, classes]),
    ]
    return image, outputs
