"""What an imported ONNX graph takes and gives, read from its declared inputs and outputs.

Servers feed a bundle one ``[n, 1]`` column per input, so a graph's inputs are read as columns:
one input per column, or one ``[n, F]`` matrix that stands for F columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto

from ferry.core.signature import Dtype, InputSpec, Kind
from ferry.errors import ExportError

FLOATS = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16})
LABELS = frozenset({TensorProto.INT64, TensorProto.INT32, TensorProto.STRING})
# The graph element type each bundle dtype is fed as.
FED_AS = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "string": TensorProto.STRING}


@dataclass(frozen=True)
class Port:
    """A declared graph input or output. ``elem`` is None for non-tensors (ZipMap's maps)."""

    name: str
    elem: int | None
    shape: tuple[int | None, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def is_column(self) -> bool:
        return self.rank == 1 or (self.rank == 2 and self.shape[1] == 1)

    def describe(self) -> str:
        kind = "map" if self.elem is None else TensorProto.DataType.Name(self.elem).lower()
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {kind}[{dims}]"


def _port(value: onnx.ValueInfoProto) -> Port:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return Port(value.name, None, ())
    tensor = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return Port(value.name, tensor.elem_type, dims)


def graph_inputs(model: onnx.ModelProto) -> list[Port]:
    # Old exporters list initializers among the inputs too; those are weights, not inputs.
    weights = {t.name for t in model.graph.initializer}
    return [_port(v) for v in model.graph.input if v.name not in weights]


def graph_outputs(model: onnx.ModelProto) -> list[Port]:
    return [_port(v) for v in model.graph.output]


def describe(ports: list[Port]) -> str:
    return ", ".join(p.describe() for p in ports) or "none"


def _column_spec(name: str, elem: int | None) -> InputSpec:
    kind: Kind = "numeric"
    dtype: Dtype = "float32"
    if elem == TensorProto.STRING:
        kind, dtype = "categorical", "string"
    elif elem == TensorProto.BOOL:
        kind = "boolean"
    elif elem == TensorProto.DOUBLE:
        dtype = "float64"
    return InputSpec(name=name, dtype=dtype, kind=kind, nullable=dtype == "string")


def inputs_from_graph(model: onnx.ModelProto) -> list[InputSpec]:
    """The bundle's inputs as the graph declares them: its columns, or its matrix's columns."""
    ports = graph_inputs(model)
    if len(ports) == 1 and ports[0].rank == 2 and not ports[0].is_column():
        port = ports[0]
        width = port.shape[1]
        if width is None:
            raise ExportError(
                f"the graph's input {port.describe()} has no fixed number of columns, so Ferry "
                "cannot name them; pass --signature sig.json listing the inputs in order"
            )
        return [_column_spec(f"{port.name}_{i}", port.elem) for i in range(width)]
    odd = [p for p in ports if not p.is_column()]
    if odd:
        raise ExportError(
            f"the graph's inputs {describe(odd)} are not columns ([n] or [n, 1]) nor one "
            "[n, F] matrix; Ferry serves tabular graphs: export the model with one input per "
            "column or one [n, F] float matrix"
        )
    return [_column_spec(p.name, p.elem) for p in ports]


def node_class_labels(node: onnx.NodeProto) -> list[int | str] | None:
    for attribute in node.attribute:
        if attribute.name == "classlabels_strings" and attribute.strings:
            return [s.decode() for s in attribute.strings]
        if attribute.name == "classlabels_int64s" and attribute.ints:
            return [int(i) for i in attribute.ints]
    return None


def class_labels(model: onnx.ModelProto, label_output: str | None) -> list[int | str] | None:
    """The classes in probability-column order, where the graph says them for sure: a ZipMap's,
    or those of the classifier node that makes the label output itself (a converter may map a
    classifier's indices to the real classes in later nodes)."""
    for node in model.graph.node:
        if node.op_type == "ZipMap":
            return node_class_labels(node)
    for node in model.graph.node:
        if label_output is not None and label_output in node.output:
            return node_class_labels(node)
    return None
