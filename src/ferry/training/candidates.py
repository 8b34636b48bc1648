"""Model families and their search spaces (Optuna), for classification and regression."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import optuna
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor

Params = dict[str, Any]
Space = Callable[[optuna.Trial], Params]


def _linear(trial: optuna.Trial) -> Params:
    return {"C": trial.suggest_float("linear.C", 1e-3, 1e2, log=True)}


def _forest(trial: optuna.Trial) -> Params:
    return {
        "n_estimators": trial.suggest_int("forest.n_estimators", 50, 300, step=50),
        "max_depth": trial.suggest_int("forest.max_depth", 4, 16),
        "min_samples_leaf": trial.suggest_int("forest.min_samples_leaf", 1, 20, log=True),
        "max_features": trial.suggest_categorical("forest.max_features", ["sqrt", 0.5, 1.0]),
    }


def _hist_gb(trial: optuna.Trial) -> Params:
    return {
        "learning_rate": trial.suggest_float("hgb.learning_rate", 0.02, 0.3, log=True),
        "max_iter": trial.suggest_int("hgb.max_iter", 50, 400, step=50),
        "max_leaf_nodes": trial.suggest_int("hgb.max_leaf_nodes", 8, 64, log=True),
        "min_samples_leaf": trial.suggest_int("hgb.min_samples_leaf", 5, 100, log=True),
        "l2_regularization": trial.suggest_float("hgb.l2", 1e-6, 1.0, log=True),
    }


def _lightgbm(trial: optuna.Trial) -> Params:
    return {
        "n_estimators": trial.suggest_int("lgbm.n_estimators", 50, 400, step=50),
        "learning_rate": trial.suggest_float("lgbm.learning_rate", 0.02, 0.3, log=True),
        "num_leaves": trial.suggest_int("lgbm.num_leaves", 8, 128, log=True),
        "min_child_samples": trial.suggest_int("lgbm.min_child_samples", 5, 100, log=True),
        "subsample": trial.suggest_float("lgbm.subsample", 0.5, 1.0),
        "subsample_freq": 1,
        "colsample_bytree": trial.suggest_float("lgbm.colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("lgbm.reg_lambda", 1e-6, 10.0, log=True),
    }


def _mlp(trial: optuna.Trial) -> Params:
    shape = trial.suggest_categorical("mlp.hidden", ["32", "64", "64-32"])
    return {
        "hidden_layer_sizes": tuple(int(s) for s in shape.split("-")),
        "alpha": trial.suggest_float("mlp.alpha", 1e-6, 1e-1, log=True),
        "learning_rate_init": trial.suggest_float("mlp.lr", 1e-4, 1e-2, log=True),
    }


SPACES: dict[str, Space] = {
    "logistic": _linear,
    "linear": _linear,
    "extra_trees": _forest,
    "random_forest": _forest,
    "hist_gb": _hist_gb,
    "lightgbm": _lightgbm,
    "mlp": _mlp,
}

# Defaults a family starts from: the first trial of each family tries them, so a short budget
# still sees every family at a sane setting.
DEFAULTS: dict[str, Params] = {
    "logistic": {"C": 1.0},
    "linear": {"C": 1.0},
    "extra_trees": {
        "n_estimators": 100,
        "max_depth": 12,
        "min_samples_leaf": 2,
        "max_features": "sqrt",
    },
    "random_forest": {
        "n_estimators": 100,
        "max_depth": 12,
        "min_samples_leaf": 2,
        "max_features": "sqrt",
    },
    "hist_gb": {
        "learning_rate": 0.1,
        "max_iter": 100,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 20,
        "l2_regularization": 1e-6,
    },
    "lightgbm": {
        "n_estimators": 100,
        "learning_rate": 0.1,
        "num_leaves": 31,
        "min_child_samples": 20,
        "subsample": 1.0,
        "subsample_freq": 1,
        "colsample_bytree": 1.0,
        "reg_lambda": 1e-6,
    },
    "mlp": {"hidden_layer_sizes": (64,), "alpha": 1e-4, "learning_rate_init": 1e-3},
}


def fit_threads() -> int:
    """Threads per fit: half the cores. Full-core OpenMP pools slow fits many-fold as soon as
    anything else wants a core (REFERENCES.md), which makes wall-clock budgets unpredictable."""
    return max(1, (os.cpu_count() or 1) // 2)


def _classifier(family: str, params: Params, balanced: bool, seed: int) -> Any:
    weight = "balanced" if balanced else None
    if family in ("logistic", "linear"):
        return LogisticRegression(**params, class_weight=weight, max_iter=2000)
    if family == "extra_trees":
        return ExtraTreesClassifier(
            **params, class_weight=weight, n_jobs=fit_threads(), random_state=seed
        )
    if family == "random_forest":
        return RandomForestClassifier(
            **params, class_weight=weight, n_jobs=fit_threads(), random_state=seed
        )
    if family == "hist_gb":
        return HistGradientBoostingClassifier(**params, class_weight=weight, random_state=seed)
    if family == "lightgbm":
        return LGBMClassifier(
            **params, class_weight=weight, random_state=seed, verbose=-1, n_jobs=fit_threads()
        )
    # MLPs take no class weights; imbalance is handled by the chosen decision threshold.
    return MLPClassifier(**params, max_iter=200, early_stopping=True, random_state=seed)


def _regressor(family: str, params: Params, seed: int) -> Any:
    if family in ("logistic", "linear"):
        return Ridge(alpha=1.0 / params["C"])
    if family == "extra_trees":
        return ExtraTreesRegressor(**params, n_jobs=fit_threads(), random_state=seed)
    if family == "random_forest":
        return RandomForestRegressor(**params, n_jobs=fit_threads(), random_state=seed)
    if family == "hist_gb":
        return HistGradientBoostingRegressor(**params, random_state=seed)
    if family == "lightgbm":
        return LGBMRegressor(**params, random_state=seed, verbose=-1, n_jobs=fit_threads())
    return MLPRegressor(**params, max_iter=300, early_stopping=True, random_state=seed)


def make_estimator(family: str, params: Params, *, task: str, balanced: bool, seed: int) -> Any:
    if task == "regression":
        return _regressor(family, params, seed)
    return _classifier(family, params, balanced, seed)


def cost_units(family: str, params: Params) -> float:
    """Relative fit cost of a configuration within its family, for the budget's fold estimates.

    Boosting and forests grow linearly with their number of trees; leaves add a little.
    """
    if family in ("hist_gb", "lightgbm"):
        trees = params.get("max_iter") or params.get("n_estimators") or 100
        leaves = params.get("max_leaf_nodes") or params.get("num_leaves") or 31
        return float(trees) * (float(leaves) / 31.0) ** 0.5
    if family in ("extra_trees", "random_forest"):
        return float(params.get("n_estimators", 100)) * float(params.get("max_depth", 12)) / 12.0
    if family == "mlp":
        return float(sum(params.get("hidden_layer_sizes", (64,))))
    return 1.0
