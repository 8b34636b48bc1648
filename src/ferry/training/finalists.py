"""The final choice among search candidates, made on the held-out validation split.

The top cross-validated mean is the best of many noisy estimates and overstates its model
(benchmarks/results/selection.md: on 270 fraud cases folds disagree by ±0.02). So the best
candidate of each family whose CV mean is within one standard error of the overall best is
refitted on the whole training split and scored on validation; the best validation score
wins, and near-ties go to the smaller graph.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from ferry.core.spec import Spec
from ferry.evaluation.metrics import score as metric_score
from ferry.training.features import FeatureLayout
from ferry.training.search import Candidate, SearchResult, build_pipeline, higher_is_better

TIE = 0.002  # validation scores closer than this are a tie (relative for error metrics)


def finalists(result: SearchResult, folds: int) -> list[Candidate]:
    eligible = [c for c in result.candidates if c.within_budget]
    if not eligible:
        return []
    sign = 1.0 if higher_is_better(result.metric) else -1.0
    best = eligible[0]
    margin = best.cv_std / math.sqrt(max(folds, 1))
    chosen: dict[str, Candidate] = {}
    for c in eligible:  # already ordered best first
        if sign * (best.score - c.score) <= margin and c.family not in chosen:
            chosen[c.family] = c
    return list(chosen.values())


def _validation_score(
    spec: Spec, model: Pipeline, frame: pd.DataFrame, target: np.ndarray, n_classes: int
) -> float:
    metric = spec.search.metric or spec.default_metric()
    if spec.task == "regression":
        return metric_score(metric, target, model.predict(frame), None)
    labels = [str(i) for i in range(n_classes)]
    truth = np.asarray([str(v) for v in target])
    return metric_score(metric, truth, model.predict_proba(frame), labels)


def _better(a: Candidate, b: Candidate, sign: float) -> bool:
    """Is ``a`` better than ``b`` on validation (ties to the smaller graph)?"""
    assert a.valid_score is not None and b.valid_score is not None
    scale = 1.0 if sign > 0 else max(abs(b.valid_score), 1e-12)
    gap = sign * (a.valid_score - b.valid_score) / scale
    if abs(gap) <= TIE:
        return (a.size_mb or 0.0) < (b.size_mb or 0.0)
    return gap > 0


def choose(
    spec: Spec,
    layout: FeatureLayout,
    result: SearchResult,
    train: tuple[Any, Any],
    valid: tuple[Any, Any],
    n_classes: int,
) -> Pipeline:
    """Mark ``result.best`` and return its pipeline fitted on the training split."""
    folds = spec.search.folds
    pool = finalists(result, folds)
    has_valid = len(valid[1]) > 0 and (spec.task == "regression" or len(set(valid[1])) > 1)
    if len(pool) <= 1 or not has_valid:
        assert result.best is not None
        return build_pipeline(spec, layout, result.best.family, result.best.params).fit(*train)
    sign = 1.0 if higher_is_better(result.metric) else -1.0
    models: dict[int, Pipeline] = {}
    for candidate in pool:
        model = build_pipeline(spec, layout, candidate.family, candidate.params).fit(*train)
        candidate.valid_score = _validation_score(spec, model, *valid, n_classes)
        models[candidate.trial] = model
    winner = pool[0]
    for candidate in pool[1:]:
        if _better(candidate, winner, sign):
            winner = candidate
    for candidate in result.candidates:
        candidate.chosen = candidate is winner
    result.best = winner
    return models[winner.trial]
