"""PyTorch modules: a TorchScript file, or a pickled module (``torch.save(model)``) under
--trust, exported with ``torch.onnx.export`` for rows of ``--input-shape`` features.

torch is optional: it is imported only here, and only when a torch model is imported.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import onnx
import pandas as pd

from ferry.errors import ExportError
from ferry.importing.columns import Hints, plan_inputs
from ferry.importing.native import Source
from ferry.importing.sources import ModelFile, require_trust

OPSET = 17
INPUT, OUTPUT = "input", "output"


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ExportError(
            "importing a PyTorch model needs torch: pip install torch (a CPU build is enough)"
        ) from exc
    return torch


class TorchNative:
    """The module's own answers, shaped like the bundle graph's (scores turned into
    probabilities the same way the graph turns them)."""

    def __init__(self, module: Any, names: list[str], task: str, scores: str) -> None:
        self.module = module
        self.names = names
        self.task = task
        self.scores = scores

    def _outputs(self, typed: pd.DataFrame) -> np.ndarray:
        torch = _torch()
        x = torch.tensor(typed[self.names].to_numpy(dtype=np.float32))
        with torch.no_grad():
            return np.asarray(self.module(x).detach().cpu().numpy(), dtype=np.float64)

    def predict_proba(self, typed: pd.DataFrame) -> np.ndarray:
        out = self._outputs(typed).reshape(len(typed), -1)
        if self.scores == "logits" and out.shape[1] > 1:
            shifted = np.exp(out - out.max(axis=1, keepdims=True))
            out = shifted / shifted.sum(axis=1, keepdims=True)
        elif self.scores == "logits":
            out = 1 / (1 + np.exp(-out))
        return np.column_stack([1 - out[:, 0], out[:, 0]]) if out.shape[1] == 1 else out

    def predict(self, typed: pd.DataFrame) -> np.ndarray:
        if self.task == "regression":
            return self._outputs(typed).reshape(-1)
        return np.argmax(self.predict_proba(typed), axis=1)


def _load(model: ModelFile, *, trust: bool, sha256: str | None) -> Any:
    torch = _torch()
    if model.is_torchscript():
        return torch.jit.load(model.stream, map_location="cpu")
    require_trust(model, "a pickled torch module", trust=trust, sha256=sha256)
    loaded = torch.load(model.stream, map_location="cpu", weights_only=False)
    if not isinstance(loaded, torch.nn.Module):
        raise ExportError(
            f"{model.path.name!r} holds a {type(loaded).__name__}, not a module (a state_dict "
            "needs its model class): save torch.jit.script(model).save('model.pt'), or "
            "torch.save(model, 'model.pt')"
        )
    return loaded


def _features(shape: list[int] | None) -> int:
    if not shape:
        raise ExportError(
            "a torch model needs --input-shape: the features of one row, e.g. --input-shape 30"
        )
    if len(shape) != 1 or shape[0] < 1:
        raise ExportError(
            f"--input-shape {','.join(map(str, shape))}: imported torch models take rows of "
            "features (one number, e.g. --input-shape 30); flatten other inputs in the module"
        )
    return shape[0]


def _export(module: Any, features: int) -> onnx.ModelProto:
    torch = _torch()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript-based exporter: it takes scripted modules, and needs no onnxscript.
            torch.onnx.export(
                module,
                (torch.zeros(2, features),),
                buffer,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "rows"}, OUTPUT: {0: "rows"}},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many kinds of errors for unsupported code
        raise ExportError(
            f"torch.onnx.export failed: {str(exc).splitlines()[0][:200]}; check --input-shape "
            "matches the module's first layer and that the module returns one tensor"
        ) from exc
    return onnx.load_from_string(buffer.getvalue())


def torch_source(
    model: ModelFile,
    hints: Hints,
    *,
    trust: bool,
    sha256: str | None,
    input_shape: list[int] | None,
    task: str,
    scores: str,
) -> Source:
    torch = _torch()
    module = _load(model, trust=trust, sha256=sha256)
    module.eval()
    features = _features(input_shape)
    inputs = plan_inputs(None, features, hints, nullable=False, generic="x")
    graph = _export(module, features)
    native = TorchNative(module, [s.name for s in inputs], task, scores)
    return Source(
        graph, inputs, task, None, native, type(module).__name__, {"torch": torch.__version__}
    )
