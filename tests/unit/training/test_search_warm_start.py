"""Search warm start: a previous best model's settings are the first trials, run as given."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

from ferry.core.spec import Spec, parse_spec
from ferry.training.features import FeatureLayout
from ferry.training.search import Search, SearchResult, fit_fold


def _spec(trials: int) -> Spec:
    return parse_spec(
        {
            "name": "warm",
            "task": "classification",
            "data": {"source": "builtin:breast_cancer", "target": "target"},
            "search": {
                "families": ["logistic", "hist_gb"],
                "trials": trials,
                "time_budget_s": 300,
                "folds": 2,
            },
        }
    )


def _data() -> tuple[FeatureLayout, pd.DataFrame, np.ndarray]:
    x, y = make_classification(n_samples=300, n_features=4, random_state=0)
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"f{i}" for i in range(4)])
    return FeatureLayout(numeric=list(frame.columns)), frame, y


def _measure(model: Any) -> tuple[float, float]:
    return 0.1, 0.1


def _run(trials: int, warm_start: dict[str, dict[str, Any]] | None) -> SearchResult:
    layout, frame, target = _data()
    search = Search(_spec(trials), layout, frame, target, measure=_measure, warm_start=warm_start)
    return search.run()


def test_warm_start_settings_are_the_first_trials_as_given() -> None:
    warm = {
        "hist_gb": {
            "learning_rate": 0.05,
            "max_iter": 30,
            "max_leaf_nodes": 7,
            "min_samples_leaf": 10,
            "l2_regularization": 0.5,
        },
        "logistic": {"C": 0.123},
        "mlp": {"alpha": 0.1},  # a family this spec no longer searches: left out
    }
    result = _run(4, warm)
    by_trial = {c.trial: c for c in result.candidates}
    assert by_trial[0].family == "hist_gb" and by_trial[0].params == warm["hist_gb"]
    assert by_trial[1].family == "logistic" and by_trial[1].params == {"C": 0.123}
    # Then every family's defaults, cheapest first, as without a warm start.
    assert by_trial[2].family == "logistic" and by_trial[2].params == {"C": 1.0}
    assert by_trial[3].family == "hist_gb"
    assert result.trials_started == 4
    assert "mlp" not in {c.family for c in result.candidates}


def test_without_warm_start_the_defaults_come_first() -> None:
    result = _run(2, None)
    assert sorted((c.trial, c.family) for c in result.candidates) == [
        (0, "logistic"),
        (1, "hist_gb"),
    ]


def test_a_warm_trial_scores_what_a_direct_fold_fit_scores() -> None:
    """The warm settings reach the estimator unchanged: the CV score is theirs."""
    params = {"C": 0.01}
    result = _run(1, {"logistic": params})
    layout, frame, target = _data()
    search = Search(_spec(1), layout, frame, target, measure=_measure)
    folds = [fit_fold(search.data, "logistic", params, i, lambda: 1e9) for i in range(2)]
    assert result.candidates[0].score == float(np.mean([f.score for f in folds]))
