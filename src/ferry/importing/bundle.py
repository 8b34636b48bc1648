"""A model trained elsewhere, made into a Ferry bundle: read its file, convert it to ONNX, shape
the graph to the bundle's conventions, check it on ``--sample`` (parity with the native model,
reference statistics for drift, metrics), write the manifest and register the version."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd

from ferry.core.bundle import BundleManifest, Lineage, Metrics, write_bundle
from ferry.core.refs import check_name
from ferry.core.signature import InputSpec, Signature
from ferry.core.stats import ReferenceStats
from ferry.errors import DataError, ExportError
from ferry.evaluation.metrics import classification_metrics, regression_metrics
from ferry.export.manifest import library_versions, reference_stats
from ferry.export.onnx import output_specs
from ferry.export.parity import check_parity, session
from ferry.importing.adapt import Outputs, bundle_graph
from ferry.importing.columns import Hints, is_unnamed, plan_inputs, tabular
from ferry.importing.graph import graph_inputs, inputs_from_graph
from ferry.importing.native import Source, lightgbm_file, xgboost_file
from ferry.importing.pipeline import pickle_source
from ferry.importing.sample import (
    Sample,
    graph_feeds,
    load_sample,
    synthetic_feeds,
    typed_sample,
    with_sample_facts,
)
from ferry.importing.sources import ModelFile, read_model_file, read_signature
from ferry.registry.service import ModelVersion, Registry

NO_DRIFT = "off: imported without --sample, so the bundle has no reference statistics"


@dataclass
class ImportRequest:
    """What ``ferry import`` was asked; the fields mirror its flags."""

    name: str
    path: Path
    format: str | None = None
    task: str | None = None  # classification | regression
    signature: Path | None = None
    labels: list[str] | None = None
    sample: str | None = None
    target: str | None = None
    rows: int | None = None
    trust: bool = False
    sha256: str | None = None
    input_shape: list[int] | None = None
    scores: str = "probabilities"  # or logits: what a bare score output holds


@dataclass
class ImportOutcome:
    bundle_dir: Path
    manifest: BundleManifest
    format: str
    notes: list[str] = field(default_factory=list)
    version: ModelVersion | None = None


@dataclass
class Checked:
    """What checking the bundle's graph taught: inputs with their facts, and the rest."""

    inputs: list[InputSpec]
    parity: dict[str, float] = field(default_factory=dict)
    reference: ReferenceStats | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def onnx_source(model: ModelFile, hints: Hints) -> Source:
    try:
        graph = onnx.load_from_string(model.data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ExportError(
            f"{model.path.name!r} is not an ONNX model ({str(exc)[:120]}); pass the right --format"
        ) from exc
    ports = graph_inputs(graph)
    if hints.signature is not None:
        inputs = tabular(hints.signature)
    elif len(ports) == 1 and not ports[0].is_column():
        # One matrix: its columns are unnamed, so a sample with as many columns names them.
        width = len(inputs_from_graph(graph))
        inputs = plan_inputs(None, width, hints, nullable=False, generic=f"{ports[0].name}_")
    else:
        inputs = inputs_from_graph(graph)
    return Source(graph, inputs, None, None, None, "onnx", {})


def _torch_task(request: ImportRequest) -> str:
    return request.task or ("classification" if request.labels else "regression")


def load_source(model: ModelFile, request: ImportRequest, hints: Hints) -> Source:
    if model.format == "onnx":
        return onnx_source(model, hints)
    if model.format == "torch":
        from ferry.importing.torch_model import torch_source

        return torch_source(
            model,
            hints,
            trust=request.trust,
            sha256=request.sha256,
            input_shape=request.input_shape,
            task=_torch_task(request),
            scores=request.scores,
        )
    if model.format == "sklearn" or model.is_pickle:
        return pickle_source(model, hints, trust=request.trust, sha256=request.sha256)
    if model.format == "lightgbm":
        return lightgbm_file(model, hints)
    return xgboost_file(model, hints)


def _task(request: ImportRequest, source: Source) -> str | None:
    if request.task and source.task and request.task != source.task:
        raise ExportError(
            f"--task {request.task} does not fit the model, which is a {source.task} model; "
            "leave --task out"
        )
    return request.task or source.task


def _run(model_bytes: bytes, feeds: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    try:
        sess = session(model_bytes)
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(None, feeds), strict=True))
    except Exception as exc:  # ONNX Runtime raises its own untyped errors
        raise ExportError(
            f"the bundle's graph fails on {where}: {str(exc).splitlines()[0][:200]}; check the "
            "inputs' kinds (--signature) match what the model was trained on"
        ) from exc


def _parity(
    model_bytes: bytes, source: Source, typed: pd.DataFrame, task: str, where: str
) -> dict[str, float]:
    try:
        return check_parity(model_bytes, source.native, typed, task)
    except ExportError as exc:
        raise ExportError(
            f"{exc} between ONNX Runtime and the native {source.estimator} on {where}: the "
            "converted graph does not reproduce the model, so Ferry will not serve it; check "
            "every step of the model has a faithful ONNX converter"
        ) from exc
    except Exception as exc:  # the native model's own errors: wrong columns, NaN, ...
        raise ExportError(
            f"the native {source.estimator} fails on {where}: {str(exc).splitlines()[0][:200]}; "
            "pass a sample with the columns and types the model was trained on"
        ) from exc


def _prediction(results: dict[str, np.ndarray], task: str) -> np.ndarray:
    if task == "regression":
        return results["prediction"].reshape(-1).astype(np.float64)
    proba = results["probabilities"]
    return proba[:, 1] if task == "binary" else np.argmax(proba, axis=1)


def _target_strings(target: pd.Series) -> np.ndarray:
    """Class values as training spells them: 1, 1.0 and True all read as "1"."""
    values = target.astype(int) if pd.api.types.is_bool_dtype(target) else target
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values, 1) == 0):
        values = values.astype(np.int64)
    return values.astype(str).to_numpy()


def _metrics(sample: Sample, results: dict[str, np.ndarray], outputs: Outputs) -> dict[str, float]:
    assert sample.target is not None
    try:
        if outputs.task == "regression":
            truth = pd.to_numeric(sample.target, errors="raise").to_numpy(dtype=np.float64)
            found = regression_metrics(truth, results["prediction"])
        else:
            truth_labels = _target_strings(sample.target)
            labels = outputs.labels or []
            found = classification_metrics(truth_labels, results["probabilities"], labels)
    except (DataError, ValueError) as exc:
        raise DataError(
            f"--target {sample.target.name!r} does not fit the model's outputs: {exc}; pass "
            "--labels naming the classes as the target spells them, in probability-column order"
        ) from exc
    return {k: float(v) for k, v in found.items() if np.isfinite(v)}


def check_on_sample(
    model_bytes: bytes, outputs: Outputs, source: Source, sample: Sample
) -> Checked:
    layout, typed = typed_sample(sample, source.inputs)
    where = f"--sample {sample.source!r}"
    results = _run(model_bytes, graph_feeds(source.inputs, typed), where)
    parity = {}
    if source.native is not None:
        parity = _parity(model_bytes, source, typed, outputs.task, where)
    reference = reference_stats(layout, typed, _prediction(results, outputs.task), outputs.task)
    metrics = _metrics(sample, results, outputs) if sample.target is not None else {}
    return Checked(with_sample_facts(source.inputs, layout, typed), parity, reference, metrics)


def _notes(source: Source, sample: Sample | None) -> list[str]:
    notes = []
    if sample is None:
        notes.append(
            "no --sample: the bundle has no drift reference (drift monitoring is off for it), "
            "no parity check and no metrics"
        )
    elif source.native is None:
        notes.append("parity not checked: an ONNX file has no native model to compare with")
    if sample is not None and sample.target is None:
        notes.append("no --target: no metrics")
    if any(is_unnamed(s) for s in source.inputs):
        first = source.inputs[0].name
        notes.append(
            f"the model names no features, so its inputs are {first}, ... by position: name "
            "them with --signature sig.json or a --sample with as many feature columns"
        )
    return notes


def _lineage(model: ModelFile, source: Source, sample: Sample | None) -> Lineage:
    params: dict[str, Any] = {
        "imported_from": model.format,
        "file": model.path.name,
        "sha256": model.sha256,
        "sample": sample.source if sample else None,
        "drift": "on" if sample else NO_DRIFT,
    }
    return Lineage(
        data_fingerprint=sample.fingerprint if sample else None,
        data_rows=sample.rows if sample else None,
        estimator=source.estimator,
        params=params,
        libraries={**library_versions(), **source.libraries},
    )


def _hints(request: ImportRequest, sample: Sample | None) -> Hints:
    if request.target is not None and sample is None:
        raise DataError("--target names a column of --sample; pass --sample too")
    signature = read_signature(request.signature) if request.signature else None
    return Hints(signature, sample.features if sample else None)


def import_model(
    request: ImportRequest,
    out: Path,
    *,
    registry: Registry | None = None,
    actor: str = "ferry",
    reason: str | None = None,
) -> ImportOutcome:
    """Write the bundle to ``out`` and, with a registry, register it as the next version."""
    check_name(request.name)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"bundle directory {str(out)!r} is not empty; choose a new one")
    model = read_model_file(request.path, request.format, request.sha256)
    sample = load_sample(request.sample, request.target, request.rows) if request.sample else None
    source = load_source(model, request, _hints(request, sample))
    model_bytes, outputs = bundle_graph(
        source.graph,
        source.inputs,
        task=_task(request, source),
        classes=source.classes,
        labels=request.labels,
        scores=request.scores,
    )
    if sample is not None:
        checked = check_on_sample(model_bytes, outputs, source, sample)
    else:
        _run(model_bytes, synthetic_feeds(source.inputs), "made-up rows")
        checked = Checked(source.inputs)
    n_classes = len(outputs.labels or [])
    manifest = BundleManifest(
        name=request.name,
        task=outputs.task,  # type: ignore[arg-type]
        signature=Signature(inputs=checked.inputs, outputs=output_specs(outputs.task, n_classes)),
        labels=outputs.labels,
        metrics=Metrics(test=checked.metrics),
        reference=checked.reference,
        lineage=_lineage(model, source, sample),
        parity=checked.parity,
    )
    manifest = write_bundle(out, manifest, model_bytes)
    version = None
    if registry is not None:
        why = reason or f"ferry import ({model.format}: {model.path.name})"
        version = registry.register(request.name, out, actor=actor, reason=why)
    return ImportOutcome(out, manifest, model.format, _notes(source, sample), version)
