"""``ferry train`` for image models: images -> CNN -> evaluation -> ONNX bundle -> registry.

The steps and their outputs are those of the tabular lab (``ferry.lab.train``): the same
evaluation report and gates, a bundle with parity checked, one registry version. A search of
one candidate stands in for the leaderboard, so the CLI summarises both alike.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferry.core.bundle import BundleManifest, ImagePreprocessing, Lineage, Metrics, write_bundle
from ferry.core.signature import MISSING_CATEGORY, Signature
from ferry.core.spec import Spec
from ferry.core.stats import (
    ReferenceStats,
    categorical_reference,
    numeric_reference,
    single_call_p99_ms,
)
from ferry.errors import BudgetError
from ferry.evaluation.metrics import score as metric_score
from ferry.evaluation.report import Evaluation, evaluate_classifier, write_report
from ferry.export.manifest import library_versions
from ferry.export.parity import session
from ferry.lab import Observer, SilentObserver, TrainOutcome
from ferry.registry.service import Registry
from ferry.serving.images import summaries, to_input
from ferry.training.search import Candidate, SearchResult
from ferry.vision.data import ImageSplit, geometry, load_images, split_images, with_statistics
from ferry.vision.export import check_parity, signature_parts, to_onnx
from ferry.vision.fit import Batches, FitResult, fit, predict_proba, scaled
from ferry.vision.network import ImageClassifier
from ferry.vision.report import add_image_sections

FAMILY = "cnn"


def train_images(
    spec: Spec,
    run_dir: Path,
    *,
    registry: Registry | None = None,
    actor: str = "ferry",
    observer: Observer | None = None,
    reason: str | None = None,
) -> TrainOutcome:
    observer = observer or SilentObserver()
    observer.stage("loading images")
    raw = geometry(spec)
    split = split_images(load_images(spec, raw), spec.split)
    prep = with_statistics(raw, split.train)
    fitted = _fit(spec, prep, split, observer)
    observer.stage("evaluating on the test set")
    inputs = {part: to_input(getattr(split, part).pixels, prep) for part in ("valid", "test")}
    proba = {part: predict_proba(fitted.network, x) for part, x in inputs.items()}
    evaluation = _evaluate(spec, split, proba)
    observer.stage("exporting to ONNX and checking parity")
    model_bytes = to_onnx(fitted.network, prep)
    parity = check_parity(model_bytes, fitted.network, prep, inputs["test"])
    result = _search_result(spec, split, fitted, model_bytes, proba["valid"], inputs["test"])
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(spec, split, prep, fitted, evaluation, result, proba["test"], parity)
    manifest = write_bundle(run_dir / "bundle", manifest, model_bytes)
    # The torch weights, for retraining or inspection; servers never read them.
    torch.save(fitted.network.state_dict(), run_dir / "cnn.pt")
    observer.stage("writing the report")
    report = write_report(
        run_dir / "report",
        name=spec.name,
        evaluation=evaluation,
        leaderboard=result.leaderboard(),
        extra=_report_extra(spec, split, manifest, result, fitted),
    )
    add_image_sections(report.html, evaluation, fitted.history, split.test, proba["test"])
    version = None
    if registry is not None:
        observer.stage("registering")
        version = registry.register(
            spec.name, run_dir / "bundle", actor=actor, reason=reason or "ferry train (cnn)"
        )
    passed = all(g.passed for g in evaluation.gates)
    bundle = run_dir / "bundle"
    return TrainOutcome(
        spec, run_dir, bundle, manifest, result, evaluation, report, version, passed
    )


def _fit(spec: Spec, prep: ImagePreprocessing, split: ImageSplit, observer: Observer) -> FitResult:
    assert spec.model is not None
    options = spec.model
    index = {name: i for i, name in enumerate(split.train.classes)}

    def targets(labels: np.ndarray) -> torch.Tensor:
        return torch.as_tensor([index[label] for label in labels], dtype=torch.long)

    def progress(row: dict[str, float]) -> None:
        observer.stage(
            f"training cnn: epoch {int(row['epoch'])}/{options.epochs}, validation loss "
            f"{row['valid_loss']:.4f}, accuracy {row['valid_accuracy']:.4f}"
        )

    torch.manual_seed(options.seed)  # before building: initial weights and dropout
    network = ImageClassifier(
        prep.channels, prep.height, prep.width, len(split.train.classes), options.filters
    )
    train = Batches(scaled(split.train.pixels, prep), targets(split.train.labels))
    valid = (to_input(split.valid.pixels, prep), targets(split.valid.labels))
    observer.stage(f"training cnn on {len(split.train)} images")
    return fit(network, train, valid, options, prep, on_epoch=progress)


def _evaluate(spec: Spec, split: ImageSplit, proba: dict[str, np.ndarray]) -> Evaluation:
    return evaluate_classifier(
        split.test.labels,
        proba["test"],
        split.test.classes,
        y_valid=split.valid.labels,
        proba_valid=proba["valid"],
        strategy=spec.threshold.strategy,
        recall_target=spec.threshold.recall_target,
        gates=spec.gates,
    )


def _search_result(
    spec: Spec,
    split: ImageSplit,
    fitted: FitResult,
    model_bytes: bytes,
    proba_valid: np.ndarray,
    test_inputs: np.ndarray,
) -> SearchResult:
    """The trained network as the one candidate of a search, measured as candidates are."""
    assert spec.model is not None
    metric = spec.search.metric or spec.default_metric()
    score = metric_score(metric, split.valid.labels, proba_valid, split.valid.classes)
    candidate = Candidate(
        trial=0,
        family=FAMILY,
        params=spec.model.model_dump(mode="json", exclude={"kind"}),
        score=score,
        cv_std=0.0,
        fit_s=fitted.seconds,
        latency_p99_ms=_latency_ms(model_bytes, test_inputs),
        size_mb=len(model_bytes) / 1e6,
        valid_score=score,
        note=f"validation {metric}; best epoch {fitted.best_epoch + 1} of {len(fitted.history)}",
    )
    candidate.within_budget = _within_budget(spec, candidate)
    candidate.pareto = candidate.chosen = candidate.within_budget
    if not candidate.within_budget:
        raise BudgetError(
            f"the cnn misses the production budgets: p99 {candidate.latency_p99_ms:.2f} ms "
            f"(max_latency_p99_ms={spec.constraints.max_latency_p99_ms}), "
            f"{candidate.size_mb:.2f} MB (max_size_mb={spec.constraints.max_size_mb}); lower "
            "model.filters or model.image_size, or relax constraints"
        )
    return SearchResult(metric, [candidate], candidate, fitted.seconds, 1)


def _latency_ms(model_bytes: bytes, inputs: np.ndarray) -> float:
    sess = session(model_bytes, threads=1)
    name = sess.get_inputs()[0].name
    singles = [{name: inputs[i : i + 1]} for i in range(min(len(inputs), 20))]
    return single_call_p99_ms(lambda feed: sess.run(None, feed), singles)


def _within_budget(spec: Spec, candidate: Candidate) -> bool:
    limits = spec.constraints
    slow = (
        limits.max_latency_p99_ms is not None
        and (candidate.latency_p99_ms or 0.0) > limits.max_latency_p99_ms
    )
    big = limits.max_size_mb is not None and (candidate.size_mb or 0.0) > limits.max_size_mb
    return not (slow or big)


def _reference(prep: ImagePreprocessing, split: ImageSplit, proba: np.ndarray) -> ReferenceStats:
    """Drift reference: the summaries a server logs per image, and the predicted classes."""
    stats = ReferenceStats()
    for name, values in summaries(to_input(split.train.pixels, prep)).items():
        stats.numeric[name] = numeric_reference(values.reshape(-1).astype(np.float64))
    if proba.shape[1] == 2:
        stats.prediction = numeric_reference(proba[:, 1].astype(np.float64))
    else:
        stats.prediction = categorical_reference(proba.argmax(axis=1).astype(str), MISSING_CATEGORY)
    return stats


def _manifest(
    spec: Spec,
    split: ImageSplit,
    prep: ImagePreprocessing,
    fitted: FitResult,
    evaluation: Evaluation,
    result: SearchResult,
    proba_test: np.ndarray,
    parity: dict[str, float],
) -> BundleManifest:
    assert result.best is not None
    classes = split.train.classes
    image, outputs = signature_parts(prep, len(classes))
    return BundleManifest(
        name=spec.name,
        task="binary" if len(classes) == 2 else "multiclass",
        signature=Signature(inputs=[image], outputs=outputs),
        labels=classes,
        threshold=evaluation.threshold,
        metrics=Metrics(
            cv={f"valid_{result.metric}": result.best.score},
            test={k: float(v) for k, v in evaluation.metrics.items() if np.isfinite(v)},
        ),
        reference=_reference(prep, split, proba_test),
        lineage=_lineage(spec, split, fitted, result),
        parity=parity,
        preprocessing=prep,
    )


def _lineage(spec: Spec, split: ImageSplit, fitted: FitResult, result: SearchResult) -> Lineage:
    assert result.best is not None
    params: dict[str, Any] = {
        **result.best.params,
        "best_epoch": fitted.best_epoch + 1,
        "epochs_run": len(fitted.history),
        "parameters": sum(p.numel() for p in fitted.network.parameters()),
    }
    libraries = library_versions()
    for name in ("torch", "pillow"):
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return Lineage(
        spec_hash=spec.spec_hash(),
        data_fingerprint=split.fingerprint,
        data_rows=split.rows,
        estimator=type(fitted.network).__name__,
        family=FAMILY,
        params=params,
        libraries=libraries,
    )


def _report_extra(
    spec: Spec,
    split: ImageSplit,
    manifest: BundleManifest,
    result: SearchResult,
    fitted: FitResult,
) -> dict[str, Any]:
    assert result.best is not None
    prep = manifest.preprocessing
    return {
        "data": {
            "source": spec.data.source,
            "rows": split.rows,
            "train": len(split.train),
            "valid": len(split.valid),
            "test": len(split.test),
            "classes": split.train.classes,
        },
        "preprocessing": prep.model_dump(mode="json") if prep else {},
        "lineage": manifest.lineage.model_dump(),
        "chosen": result.best.row(1),
        "training": {
            "seconds": round(fitted.seconds, 2),
            "epochs_run": len(fitted.history),
            "best_epoch": fitted.best_epoch + 1,
            "stopped_early": fitted.stopped_early,
        },
        "parity": manifest.parity,
        "metric": result.metric,
    }
