"""ONNX Runtime behind one class: the only module of the server that imports onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ferry.errors import BundleError, ErrorCode, FerryError


class RuntimeError_(FerryError):
    code = ErrorCode.INTERNAL


def session_options(intra_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # Small tabular graphs gain nothing from parallel operators; extra threads only steal cores
    # from the HTTP side (see REFERENCES.md: OpenMP pools starving peers' servers).
    options.intra_op_num_threads = max(1, intra_threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = True
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxModel:
    """A loaded graph; ``run`` is thread-safe (ONNX Runtime sessions are)."""

    def __init__(self, graph: Path | bytes, intra_threads: int = 1) -> None:
        """``graph``: a .onnx file, or a serialised graph (batch scoring builds its own)."""
        source = graph if isinstance(graph, bytes) else str(graph)
        try:
            self.session = ort.InferenceSession(
                source, session_options(intra_threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors for bad graphs
            raise BundleError(f"ONNX Runtime cannot load the graph: {str(exc)[:200]}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        names = outputs or self.output_names
        try:
            values = self.session.run(names, dict(feeds))
        except Exception as exc:
            raise RuntimeError_(
                f"model execution failed: {str(exc).splitlines()[0][:200]}"
            ) from exc
        return dict(zip(names, values, strict=True))
