"""Reshape an imported graph to what servers expect of a bundle's graph.

Inputs become one ``[n, 1]`` column per signature input (a matrix input is fed by a Concat of
them; other element types by a Cast). Classifiers give ``label`` (int64 index into the
manifest's labels) and ``probabilities`` (float32 ``[n, k]``); regressors give ``prediction``
(float32 ``[n, 1]``). The model's own nodes are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ferry.core.signature import InputSpec
from ferry.errors import ExportError
from ferry.importing.graph import (
    FED_AS,
    FLOATS,
    LABELS,
    Port,
    class_labels,
    describe,
    graph_inputs,
    graph_outputs,
)

LABEL, PROBABILITIES, PREDICTION = "label", "probabilities", "prediction"
ML_DOMAIN = "ai.onnx.ml"
DEFAULT_OPSET = 15
Scores = str  # "probabilities" or "logits"


def _subgraphs(node: onnx.NodeProto) -> Iterable[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        yield from attribute.graphs


def _value_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names |= set(node.input) | set(node.output)
        for sub in _subgraphs(node):
            names |= _value_names(sub)
    return names


def _rename_in(graph: onnx.GraphProto, old: str, new: str) -> None:
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        for sub in _subgraphs(node):
            _rename_in(sub, old, new)  # subgraphs may read the outer value by name


class Rewriter:
    """Adds nodes and constants around a graph under names that cannot clash with its own."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.used = _value_names(model.graph)
        self.head: list[onnx.NodeProto] = []  # runs before the model's nodes
        self.tail: list[onnx.NodeProto] = []  # runs after them

    def fresh(self, hint: str) -> str:
        for i in range(len(self.used) + 1):
            name = f"{hint}__ferry{i}"
            if name not in self.used:
                self.used.add(name)
                return name
        raise AssertionError("unreachable: a free name always exists")

    def free(self, name: str) -> None:
        """Move the graph's own value called ``name`` aside, so Ferry can use the name."""
        if name in self.used:
            _rename_in(self.graph, name, self.fresh(name))
        self.used.add(name)

    def const(self, values: Any, dtype: Any) -> str:
        name = self.fresh("const")
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype), name))
        return name

    def node(
        self,
        op: str,
        inputs: list[str],
        output: str | None = None,
        *,
        head: bool = False,
        domain: str = "",
        **attrs: Any,
    ) -> str:
        out = output or self.fresh(op.lower())
        made = helper.make_node(
            op, inputs, [out], name=self.fresh(f"ferry_{op}"), domain=domain, **attrs
        )
        (self.head if head else self.tail).append(made)
        return out

    def require(self, domain: str, version: int) -> None:
        """Import ``domain`` at ``version`` at least. Raising ai.onnx.ml from 1 to 2 changes
        only LabelEncoder's attributes, and converters write version-2 LabelEncoders anyway."""
        for opset in self.model.opset_import:
            if opset.domain == domain:
                opset.version = max(opset.version, version)
                return
        self.model.opset_import.append(helper.make_opsetid(domain, version))

    def finish(self) -> None:
        nodes = [*self.head, *self.graph.node, *self.tail]
        del self.graph.node[:]
        self.graph.node.extend(nodes)


def _column_input(name: str, dtype: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, FED_AS[dtype], [None, 1])


def _replace_input(graph: onnx.GraphProto, name: str, new: list[onnx.ValueInfoProto]) -> None:
    kept = list(graph.input)
    at = next(i for i, v in enumerate(kept) if v.name == name)
    kept[at : at + 1] = new
    del graph.input[:]
    graph.input.extend(kept)


def _feed_column(rw: Rewriter, spec: InputSpec, port: Port) -> None:
    fed = FED_AS[spec.dtype]
    if fed == port.elem and port.rank == 2:
        return
    inner = rw.fresh(port.name)
    _rename_in(rw.graph, port.name, inner)
    _replace_input(rw.graph, inner, [_column_input(spec.name, spec.dtype)])
    value = spec.name
    if fed != port.elem:
        value = rw.node("Cast", [value], head=True, to=port.elem)
    if port.rank == 1:
        value = rw.node("Reshape", [value, rw.const([-1], np.int64)], head=True)
    rw.node("Identity", [value], inner, head=True)


def _feed_matrix(rw: Rewriter, inputs: list[InputSpec], port: Port) -> None:
    for spec in inputs:
        rw.free(spec.name)
    _replace_input(rw.graph, port.name, [_column_input(s.name, s.dtype) for s in inputs])
    columns = [
        s.name
        if FED_AS[s.dtype] == port.elem
        else rw.node("Cast", [s.name], head=True, to=port.elem)
        for s in inputs
    ]
    rw.node("Concat", columns, port.name, head=True, axis=1)


def _check_batch(ports: list[Port]) -> None:
    fixed = [p for p in ports if p.rank and p.shape[0] is not None]
    if fixed:
        raise ExportError(
            f"the graph's inputs {describe(fixed)} have a fixed number of rows, but servers "
            "batch requests: export the model with a dynamic first dimension (torch: "
            "dynamic_axes={'input': {0: 'rows'}}; skl2onnx: [None, n_features])"
        )


def adapt_inputs(rw: Rewriter, inputs: list[InputSpec]) -> None:
    ports = graph_inputs(rw.model)
    _check_batch(ports)
    by_name = {p.name: p for p in ports}
    names = [s.name for s in inputs]
    if set(names) == set(by_name):
        for spec in inputs:
            _feed_column(rw, spec, by_name[spec.name])
        return
    if len(ports) == 1 and ports[0].rank == 2 and ports[0].shape[1] in (None, len(inputs)):
        _feed_matrix(rw, inputs, ports[0])
        return
    raise ExportError(
        f"the inputs {names} do not match the graph's inputs ({describe(ports)}): give one "
        "input per graph input with the same names, or as many inputs as the columns of its "
        "one [n, F] matrix input; fix --signature (or leave it out to read the graph's own)"
    )


@dataclass(frozen=True)
class Outputs:
    task: str  # binary | multiclass | regression
    labels: list[str] | None


def infer_task(outputs: list[Port]) -> str:
    floats = [p for p in outputs if p.elem in FLOATS]
    labels = [p for p in outputs if p.elem in LABELS]
    if any(p.elem is None for p in outputs) or (floats and labels):
        return "classification"
    if floats:
        return "regression"
    raise ExportError(
        f"cannot tell the task from the graph's outputs ({describe(outputs)}); "
        "pass --task classification or --task regression"
    )


def _set_outputs(rw: Rewriter, outputs: list[onnx.ValueInfoProto]) -> None:
    del rw.graph.output[:]
    rw.graph.output.extend(outputs)


def _regression(rw: Rewriter, outputs: list[Port]) -> None:
    floats = [p for p in outputs if p.elem in FLOATS and p.rank <= 2]  # rank 0: undeclared
    if len(floats) == 1 and floats[0].rank == 2 and floats[0].shape[1] not in (None, 1):
        raise ExportError(
            f"a regressor gives one value per row, but the graph's output "
            f"{floats[0].describe()} has several; pass --task classification if it scores classes"
        )
    if len(floats) != 1:
        raise ExportError(
            f"a regressor needs exactly one float output [n] or [n, 1]; the graph gives "
            f"{describe(outputs)}: export it with one output, or pass --task classification"
        )
    value = rw.node("Cast", [floats[0].name], to=TensorProto.FLOAT)
    rw.node("Reshape", [value, rw.const([-1, 1], np.int64)], PREDICTION)
    _set_outputs(rw, [helper.make_tensor_value_info(PREDICTION, TensorProto.FLOAT, [None, 1])])


def _unzip(rw: Rewriter, name: str) -> str:
    """Drop the ZipMap that makes ``name`` and return the probability tensor it maps."""
    for node in rw.graph.node:
        if name in node.output and node.op_type == "ZipMap":
            rw.graph.node.remove(node)
            return str(node.input[0])
    raise ExportError(
        f"output {name!r} is a map not made by a ZipMap node; export the classifier's "
        "probabilities as a float tensor [n, classes]"
    )


def _width(port: Port, known: list[Any] | None) -> int:
    if port.elem is not None and port.rank == 1:
        return 1
    if port.elem is not None and port.shape[-1] is not None:
        return int(port.shape[-1])
    if known:
        return len(known)
    raise ExportError(
        f"cannot tell how many classes output {port.describe()} has; "
        "pass --labels with one name per class, in probability-column order"
    )


def _probabilities(rw: Rewriter, raw: str, port: Port, width: int, scores: Scores) -> None:
    value = rw.node("Cast", [raw], to=TensorProto.FLOAT)
    if port.rank == 1:
        value = rw.node("Reshape", [value, rw.const([-1, 1], np.int64)])
    if scores == "logits":
        value = rw.node("Softmax", [value], axis=1) if width > 1 else rw.node("Sigmoid", [value])
    if width == 1:  # one column: the positive class's probability
        rest = rw.node("Sub", [rw.const([1.0], np.float32), value])
        value = rw.node("Concat", [rest, value], axis=1)
    rw.node("Identity", [value], PROBABILITIES)


def _label_names(given: list[str] | None, classes: list[Any] | None, k: int) -> list[str]:
    if given is not None:
        if len(given) != k:
            raise ExportError(
                f"--labels names {len(given)} classes but the model has {k}; "
                "name every class, in probability-column order"
            )
        return list(given)
    if classes is not None:
        if len(classes) != k:
            raise ExportError(
                f"the graph names {len(classes)} classes {classes} but gives {k} probability "
                "columns; pass --labels with one name per column"
            )
        return [str(c) for c in classes]
    return [str(i) for i in range(k)]


def _string_index(rw: Rewriter, port: Port, keys: list[str]) -> str:
    rw.require(ML_DOMAIN, 2)
    flat = rw.node("Reshape", [port.name, rw.const([-1], np.int64)])
    return rw.node(
        "LabelEncoder",
        [flat],
        domain=ML_DOMAIN,
        keys_strings=keys,
        values_int64s=list(range(len(keys))),
        default_int64=0,
    )


def _int_index(rw: Rewriter, port: Port, keys: list[int]) -> str:
    flat = rw.node("Cast", [port.name], to=TensorProto.INT64)
    if keys == list(range(len(keys))):
        return rw.node("Reshape", [flat, rw.const([-1], np.int64)])
    column = rw.node("Reshape", [flat, rw.const([-1, 1], np.int64)])
    hits = rw.node("Equal", [column, rw.const([keys], np.int64)])
    ranks = rw.node("Cast", [hits], to=TensorProto.FLOAT)
    return rw.node("ArgMax", [ranks], axis=1, keepdims=0)


def _label(
    rw: Rewriter, port: Port | None, classes: list[Any] | None, given: list[str] | None
) -> None:
    """The model's own label as an index into the labels, where its classes are known for sure;
    otherwise the class with the highest probability."""
    if port is not None and port.elem == TensorProto.STRING and (classes or given):
        index = _string_index(rw, port, [str(c) for c in (classes or given or [])])
    elif port is not None and classes and all(isinstance(c, int) for c in classes):
        index = _int_index(rw, port, [int(c) for c in classes])
    else:
        index = rw.node("ArgMax", [PROBABILITIES], axis=1, keepdims=0)
    rw.node("Identity", [index], LABEL)


def _classification(
    rw: Rewriter,
    outputs: list[Port],
    classes: list[Any] | None,
    given: list[str] | None,
    scores: Scores,
) -> list[str]:
    label = next((p for p in outputs if p.elem in LABELS and p.rank in (1, 2)), None)
    proba = next(
        (p for p in outputs if p.elem is None or (p.elem in FLOATS and p.rank in (1, 2))), None
    )
    if proba is None:
        raise ExportError(
            f"a classifier needs a probability (or score) output; the graph gives "
            f"{describe(outputs)}: export one, or pass --task regression"
        )
    classes = classes or class_labels(rw.model, label.name if label else None)
    raw = _unzip(rw, proba.name) if proba.elem is None else proba.name
    width = _width(proba, classes or given)
    k = max(width, 2)
    names = _label_names(given, classes, k)
    _probabilities(rw, raw, proba, width, scores)
    _label(rw, label, classes, given)
    _set_outputs(
        rw,
        [
            helper.make_tensor_value_info(LABEL, TensorProto.INT64, [None]),
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [None, k]),
        ],
    )
    return names


def adapt_outputs(
    rw: Rewriter,
    task: str | None,
    classes: list[Any] | None,
    labels: list[str] | None,
    scores: Scores,
) -> Outputs:
    for name in (LABEL, PROBABILITIES, PREDICTION):
        rw.free(name)  # the graph's own outputs may carry these names
    outputs = graph_outputs(rw.model)
    task = task or infer_task(outputs)
    if task == "regression":
        _regression(rw, outputs)
        return Outputs("regression", None)
    names = _classification(rw, outputs, classes, labels, scores)
    return Outputs("binary" if len(names) == 2 else "multiclass", names)


def bundle_graph(
    model: onnx.ModelProto,
    inputs: list[InputSpec],
    *,
    task: str | None = None,
    classes: list[Any] | None = None,
    labels: list[str] | None = None,
    scores: Scores = "probabilities",
) -> tuple[bytes, Outputs]:
    """The graph with Ferry's inputs and outputs, checked by ``onnx.checker``."""
    clash = [s.name for s in inputs if s.name in (LABEL, PROBABILITIES, PREDICTION)]
    if clash:
        raise ExportError(
            f"input(s) {clash} share a name with the bundle's outputs (label, probabilities, "
            "prediction); rename the feature before export, or in --signature for a matrix input"
        )
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    rw = Rewriter(copy)
    if not any(o.domain in ("", "ai.onnx") for o in copy.opset_import):
        rw.require("", DEFAULT_OPSET)  # graphs of ML operators only import no standard ops
    adapt_inputs(rw, inputs)
    outputs = adapt_outputs(rw, task, classes, labels, scores)
    rw.finish()
    try:
        onnx.checker.check_model(copy)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the adapted graph is not valid ONNX: {str(exc)[:300]}") from exc
    return copy.SerializeToString(), outputs
