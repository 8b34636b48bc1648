"""The lab half of the loop: data -> search -> evaluation -> export -> registry.

It orchestrates the packages and owns none of their logic; it lives outside ``training`` so
that ``training`` and ``export`` do not import each other.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ferry.core.bundle import BundleManifest, Lineage, Metrics, write_bundle
from ferry.core.signature import MISSING_CATEGORY, Signature
from ferry.core.spec import Spec
from ferry.data.load import fingerprint, load_dataset
from ferry.data.quality import QualityReport, check_quality
from ferry.data.schema import feature_columns, infer_schema
from ferry.data.split import Split, split_frame
from ferry.errors import BudgetError, DataError
from ferry.evaluation.importance import permutation_importance_frame
from ferry.evaluation.metrics import score as metric_score
from ferry.evaluation.report import (
    Evaluation,
    ReportPaths,
    evaluate_classifier,
    evaluate_regressor,
    write_report,
)
from ferry.export.manifest import input_specs, library_versions, reference_stats
from ferry.export.onnx import output_specs, to_onnx
from ferry.export.parity import check_parity
from ferry.export.probe import CandidateProbe
from ferry.export.quantize import Holdout
from ferry.registry.service import ModelVersion, Registry
from ferry.training.features import FeatureLayout, feeds, model_frame, plan_layout
from ferry.training.finalists import choose
from ferry.training.search import Candidate, Search, SearchResult

CALIBRATION_ROWS = 512  # rows a static quantization calibrates on


class Observer(Protocol):
    def stage(self, text: str) -> None: ...

    def trial(self, candidate: Candidate | None, seconds_left: float) -> None: ...


class SilentObserver:
    def stage(self, text: str) -> None:
        return None

    def trial(self, candidate: Candidate | None, seconds_left: float) -> None:
        return None


@dataclass(frozen=True)
class ExtraData:
    """Rows added to the training split only (retraining: labelled production rows), so the
    validation and test splits stay those of the spec's data and versions compare on them."""

    frame: pd.DataFrame
    fingerprint: str
    parent_version: int | None = None


@dataclass
class Prepared:
    split: Split
    layout: FeatureLayout
    labels: list[str] | None
    task: str
    quality: QualityReport
    fingerprint: str
    rows: int
    extra: ExtraData | None = None


@dataclass
class TrainOutcome:
    spec: Spec
    run_dir: Path
    bundle_dir: Path
    manifest: BundleManifest
    search: SearchResult
    evaluation: Evaluation
    report: ReportPaths
    version: ModelVersion | None
    gates_passed: bool
    prepared: Prepared | None = None


def prepare(spec: Spec, extra: ExtraData | None = None) -> Prepared:
    frame = load_dataset(spec.data.source, rows=spec.data.rows, seed=spec.split.seed)
    target = spec.data.target
    if target not in frame.columns:
        raise DataError(
            f"data.target {target!r} is not a column; columns are {list(frame.columns)}"
        )
    schema = infer_schema(frame, target)
    quality = check_quality(frame, target, schema, spec.task)
    _stop_on_quality_errors(spec, quality)
    frame = frame.dropna(subset=[target])
    task, labels = _task(spec, frame[target])
    split = split_frame(
        frame,
        target,
        task=spec.task,
        test_size=spec.split.test_size,
        valid_size=spec.split.valid_size,
        time_column=spec.split.time_column,
        seed=spec.split.seed,
    )
    text = spec.features.text
    kinds = feature_columns(
        schema,
        target,
        spec.data.drop,
        spec.data.sensitive,
        text=False if text is None else (text.columns or True),
    )
    if not any(kinds.values()):
        raise DataError(
            "no usable feature columns: every column is the target, dropped, "
            "sensitive, id-like or free text; check data.drop and data.sensitive "
            "(set features.text to use free text)"
        )
    if extra is not None and len(extra.frame):
        needed = [target, *(c for columns in kinds.values() for c in columns)]
        split = _with_extra_training_rows(split, frame, extra.frame, needed)
    layout = plan_layout(
        split.train, {str(k): v for k, v in kinds.items()}, spec.features.max_categories
    )
    return Prepared(split, layout, labels, task, quality, fingerprint(frame), len(frame), extra)


def _with_extra_training_rows(
    split: Split, frame: pd.DataFrame, extra: pd.DataFrame, needed: list[str]
) -> Split:
    missing = [c for c in needed if c not in extra.columns]
    if missing:
        raise DataError(
            f"the added training rows lack column(s) {missing} that the model is trained on; "
            "they come from the prediction log and late labels of a model with these inputs"
        )
    # Columns the model does not take (ids, sensitive columns) are not logged: left empty.
    added = pd.DataFrame({c: _conform(extra[c], frame[c]) for c in needed})
    train = pd.concat([split.train, added], ignore_index=True)
    return dataclasses.replace(split, train=train)


def _conform(values: pd.Series, like: pd.Series) -> pd.Series:
    """Logged values (graph types: epoch seconds, 0/1, ``__missing__``) as the spec's column."""
    if pd.api.types.is_datetime64_any_dtype(like.dtype):
        if pd.api.types.is_numeric_dtype(values):
            values = pd.to_datetime(values, unit="s", utc=True)
        stamps = pd.to_datetime(values, utc=True, errors="coerce")
        zone = getattr(like.dtype, "tz", None)
        return stamps.dt.tz_convert(zone) if zone is not None else stamps.dt.tz_localize(None)
    if pd.api.types.is_bool_dtype(like.dtype) and not values.isna().any():
        return pd.to_numeric(values, errors="coerce").fillna(0).astype(bool)
    if pd.api.types.is_numeric_dtype(like.dtype):
        return pd.to_numeric(values, errors="coerce")
    return values.where(values != MISSING_CATEGORY, None)


def _stop_on_quality_errors(spec: Spec, quality: QualityReport) -> None:
    # Unlabelled rows are dropped below and dropped columns cannot leak: neither blocks.
    blocking = [
        issue
        for issue in quality.errors()
        if issue.check != "missing" and issue.column not in spec.data.drop
    ]
    if blocking:
        lines = "; ".join(f"{i.check} in {i.column!r}: {i.detail}" for i in blocking)
        raise DataError(f"the data cannot be trained on as it is: {lines}")


def _task(spec: Spec, target: pd.Series) -> tuple[str, list[str] | None]:
    if spec.task == "regression":
        if not pd.api.types.is_numeric_dtype(target):
            raise DataError(
                f"task is regression but target {spec.data.target!r} is not numeric; "
                "use task: classification or fix the column"
            )
        return "regression", None
    labels = sorted(str(v) for v in pd.unique(target.astype(str)))
    if len(labels) < 2:
        raise DataError(f"target {spec.data.target!r} has one class ({labels}); need at least 2")
    return ("binary" if len(labels) == 2 else "multiclass"), labels


def encode_target(values: pd.Series, labels: list[str] | None) -> np.ndarray:
    if labels is None:
        return values.to_numpy(dtype=np.float64)
    index = {label: i for i, label in enumerate(labels)}
    return np.asarray([index[str(v)] for v in values], dtype=np.int64)


def run_search(
    spec: Spec,
    prep: Prepared,
    observer: Observer,
    *,
    dask_address: str | None = None,
    warm_start: dict[str, dict[str, Any]] | None = None,
) -> SearchResult:
    """Search here, or with ``dask_address`` fit the trials' folds on that Dask cluster."""
    typed = model_frame(prep.split.train, prep.layout)
    target = encode_target(prep.split.train[spec.data.target], prep.labels)
    probe = CandidateProbe(prep.layout, prep.task, len(prep.labels or []), typed)
    options: dict[str, Any] = {"measure": probe, "on_trial": observer.trial, "labels": prep.labels}
    if dask_address:
        from ferry.distributed.search import search_on_cluster

        result = search_on_cluster(
            dask_address, spec, prep.layout, typed, target, warm_start=warm_start, **options
        )
    else:
        search = Search(spec, prep.layout, typed, target, warm_start=warm_start, **options)
        result = search.run()
    if result.best is None:
        raise BudgetError(_no_candidate_message(spec, result))
    return result


def _no_candidate_message(spec: Spec, result: SearchResult) -> str:
    if not result.candidates:
        return (
            f"no candidate finished within search.time_budget_s={spec.search.time_budget_s}; "
            "raise the budget, lower data.rows or search.folds"
        )
    rows = "; ".join(
        f"{c.family} p99 {_num(c.latency_p99_ms)} ms, {_num(c.size_mb)} MB"
        + (f" ({c.note})" if c.note else "")
        for c in result.candidates[:5]
    )
    limits = spec.constraints
    return (
        f"no candidate met the production budgets (max_latency_p99_ms="
        f"{limits.max_latency_p99_ms}, max_size_mb={limits.max_size_mb}): {rows}; "
        "relax constraints or add faster families (logistic, hist_gb)"
    )


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def fit_best(spec: Spec, prep: Prepared, result: SearchResult) -> Any:
    """Choose among the finalists on validation; return the winner fitted on train."""
    target = spec.data.target
    train = (
        model_frame(prep.split.train, prep.layout),
        encode_target(prep.split.train[target], prep.labels),
    )
    valid = (
        model_frame(prep.split.valid, prep.layout),
        encode_target(prep.split.valid[target], prep.labels),
    )
    return choose(spec, prep.layout, result, train, valid, len(prep.labels or []))


def evaluate(spec: Spec, prep: Prepared, model: Any) -> Evaluation:
    test = prep.split.test
    typed_test = model_frame(test, prep.layout)
    sensitive = test[spec.data.sensitive] if spec.data.sensitive else None
    if prep.labels is None:
        evaluation = evaluate_regressor(
            test[spec.data.target].to_numpy(dtype=np.float64),
            model.predict(typed_test),
            gates=spec.gates,
        )
    else:
        valid = prep.split.valid
        has_valid = len(valid) > 0
        evaluation = evaluate_classifier(
            test[spec.data.target].astype(str).to_numpy(),
            model.predict_proba(typed_test),
            prep.labels,
            y_valid=valid[spec.data.target].astype(str).to_numpy() if has_valid else None,
            proba_valid=model.predict_proba(model_frame(valid, prep.layout)) if has_valid else None,
            strategy=spec.threshold.strategy,
            recall_target=spec.threshold.recall_target,
            sensitive=sensitive,
            gates=spec.gates,
        )
    evaluation.importance = _importance(spec, prep, model, typed_test)
    return evaluation


def _importance(spec: Spec, prep: Prepared, model: Any, typed: pd.DataFrame) -> dict[str, float]:
    target = encode_target(prep.split.test[spec.data.target], prep.labels)
    metric = spec.search.metric or spec.default_metric()
    sign = -1.0 if metric in ("log_loss", "rmse", "mae") else 1.0
    labels = [str(i) for i in range(len(prep.labels or []))]

    def scorer(frame: pd.DataFrame) -> float:
        rows = target[typed.index.get_indexer(frame.index)]
        if prep.labels is None:
            return sign * metric_score(metric, rows, model.predict(frame), None)
        truth = np.asarray([str(v) for v in rows])
        return sign * metric_score(metric, truth, model.predict_proba(frame), labels)

    return permutation_importance_frame(
        scorer, typed, list(typed.columns), n_repeats=3, seed=spec.split.seed, max_rows=3000
    )


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)
    }


def _test_prediction(prep: Prepared, model: Any, typed_test: pd.DataFrame) -> np.ndarray:
    if prep.task == "regression":
        return np.asarray(model.predict(typed_test), dtype=np.float64)
    proba = model.predict_proba(typed_test)
    return proba[:, 1] if prep.task == "binary" else np.argmax(proba, axis=1)


def export(
    spec: Spec, prep: Prepared, model: Any, result: SearchResult, evaluation: Evaluation, out: Path
) -> BundleManifest:
    """One ONNX graph + manifest in ``out``; fails if ONNX Runtime disagrees with the model."""
    assert result.best is not None
    n_classes = len(prep.labels or [])
    model_bytes = to_onnx(model, prep.layout, prep.task, n_classes)
    typed_train = model_frame(prep.split.train, prep.layout)
    typed_test = model_frame(prep.split.test, prep.layout)
    parity = check_parity(model_bytes, model, typed_test, prep.task)
    manifest = BundleManifest(
        name=spec.name,
        task=prep.task,  # type: ignore[arg-type]
        signature=Signature(
            inputs=input_specs(prep.layout, typed_train), outputs=output_specs(prep.task, n_classes)
        ),
        labels=prep.labels,
        threshold=evaluation.threshold,
        metrics=Metrics(
            cv={result.metric: result.best.score, f"{result.metric}_std": result.best.cv_std},
            test=_finite(evaluation.metrics),
        ),
        reference=reference_stats(
            prep.layout, typed_train, _test_prediction(prep, model, typed_test), prep.task
        ),
        lineage=Lineage(
            spec_hash=spec.spec_hash(),
            data_fingerprint=prep.fingerprint,
            data_rows=prep.rows,
            parent_version=prep.extra.parent_version if prep.extra else None,
            production_rows=len(prep.extra.frame) if prep.extra else None,
            production_fingerprint=prep.extra.fingerprint if prep.extra else None,
            estimator=type(model.steps[-1][1]).__name__,
            family=result.best.family,
            params=result.best.row(1)["params"],
            libraries=library_versions(),
        ),
        parity=parity,
    )
    return write_bundle(out, manifest, model_bytes)


def _report_extra(
    spec: Spec, prep: Prepared, manifest: BundleManifest, result: SearchResult
) -> dict[str, Any]:
    assert result.best is not None
    return {
        "data": {
            "source": spec.data.source,
            "rows": prep.rows,
            "train": len(prep.split.train),
            "valid": len(prep.split.valid),
            "test": len(prep.split.test),
            "features": prep.layout.columns,
            "sensitive": spec.data.sensitive,
            "quality": [
                f"{i.check}: {i.column or ''} {i.detail}".strip() for i in prep.quality.issues
            ],
        },
        "lineage": manifest.lineage.model_dump(),
        "chosen": result.best.row(1),
        "search": {
            "metric": result.metric,
            "elapsed_s": result.elapsed_s,
            "trials": result.trials_started,
            "pruned": result.pruned,
        },
        "parity": manifest.parity,
    }


def train(
    spec: Spec,
    run_dir: Path,
    *,
    registry: Registry | None = None,
    actor: str = "ferry",
    observer: Observer | None = None,
    extra: ExtraData | None = None,
    reason: str | None = None,
    dask_address: str | None = None,
    warm_start: dict[str, dict[str, Any]] | None = None,
) -> TrainOutcome:
    if spec.model is not None:  # images: a CNN, trained by ferry.vision
        _check_image_run(extra, dask_address)
        return _vision().train_images(
            spec, run_dir, registry=registry, actor=actor, observer=observer, reason=reason
        )
    observer = observer or SilentObserver()
    observer.stage("loading and checking data")
    prep = prepare(spec, extra)
    observer.stage(f"searching {', '.join(spec.search.families)}")
    result = run_search(spec, prep, observer, dask_address=dask_address, warm_start=warm_start)
    observer.stage("fitting the chosen model")
    model = fit_best(spec, prep, result)
    observer.stage("evaluating on the test set")
    evaluation = evaluate(spec, prep, model)
    observer.stage("exporting to ONNX and checking parity")
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = export(spec, prep, model, result, evaluation, run_dir / "bundle")
    observer.stage("writing the report")
    (run_dir / "leaderboard.json").write_text(json.dumps(result.leaderboard(), indent=2))
    report = write_report(
        run_dir / "report",
        name=spec.name,
        evaluation=evaluation,
        leaderboard=result.leaderboard(),
        extra=_report_extra(spec, prep, manifest, result),
    )
    passed = all(g.passed for g in evaluation.gates)
    version = None
    if registry is not None:
        observer.stage("registering")
        version = registry.register(
            spec.name,
            run_dir / "bundle",
            actor=actor,
            reason=reason or f"ferry train ({result.best.family if result.best else ''})",
        )
    return TrainOutcome(
        spec,
        run_dir,
        run_dir / "bundle",
        manifest,
        result,
        evaluation,
        report,
        version,
        passed,
        prep,
    )


def _check_image_run(extra: ExtraData | None, dask_address: str | None) -> None:
    # Servers log per-image summaries, not pixels, so there are no production images to add.
    if extra is not None and len(extra.frame):
        raise DataError(
            "image models train on their spec's images only: the prediction log holds image "
            "summaries, not pixels; set retraining.production_data.use: false"
        )
    if dask_address:
        raise DataError("--dask distributes tabular searches; a cnn trains in this process")


def _vision() -> Any:
    """``ferry.vision.train``, imported only for image specs: it needs PyTorch."""
    try:
        from ferry.vision import train as vision_train
    except ImportError as exc:
        raise DataError(
            f"model.kind cnn needs PyTorch, which is not installed ({exc}); "
            "pip install 'ferry-ml[torch]'"
        ) from exc
    return vision_train


def holdout(spec: Spec, manifest: BundleManifest) -> Holdout:
    """The spec's validation rows (to calibrate on) and test rows, as the bundle's graph takes
    them: what ``ferry export --quantize`` scores a graph on, before and after."""
    if manifest.preprocessing is not None:
        from ferry.vision.data import holdout as image_holdout

        return image_holdout(spec, manifest)
    prep = prepare(spec)
    split, target = prep.split, spec.data.target
    calibration = (split.valid if len(split.valid) else split.train).head(CALIBRATION_ROWS)
    test = split.test[target]
    truth = test.astype(str).to_numpy() if prep.labels else test.to_numpy(dtype=np.float64)
    return Holdout(
        calibration=[feeds(model_frame(calibration, prep.layout))],
        test=feeds(model_frame(split.test, prep.layout)),
        y_test=truth,
    )
