"""Every family and feature option converts to one ONNX graph that ONNX Runtime runs at parity."""

import numpy as np
import pandas as pd
import pytest

from ferry.core.spec import FeatureSpec, parse_spec
from ferry.errors import ExportError
from ferry.export.onnx import to_onnx
from ferry.export.parity import check_parity, session
from ferry.training.candidates import DEFAULTS
from ferry.training.features import feeds, model_frame, plan_layout
from ferry.training.search import build_pipeline

KINDS = {"numeric": ["a", "b"], "boolean": ["flag"], "datetime": ["ts"], "categorical": ["c"]}


def frame(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.lognormal(size=n),
            "c": rng.choice(["x", "y", "z", None], n),
            "flag": rng.choice([True, False], n),
            "ts": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 400 * 86400, n), "s"),
        }
    )
    df.loc[::7, "a"] = np.nan
    y = ((df.b > 1) & (df.c != "x")).astype(int).to_numpy()
    return df, y


def spec(task: str = "classification", **features: object):
    return parse_spec(
        {"name": "t", "task": task, "data": {"source": "x", "target": "y"}, "features": features}
    )


@pytest.mark.parametrize(
    "family", ["logistic", "extra_trees", "hist_gb", "lightgbm", "mlp", "random_forest"]
)
def test_family_parity(family: str) -> None:
    df, y = frame()
    s = spec()
    layout = plan_layout(df, KINDS, 30)
    typed = model_frame(df, layout)
    params = dict(DEFAULTS[family])
    if "n_estimators" in params:
        params["n_estimators"] = 20
    model = build_pipeline(s, layout, family, params).fit(typed, y)
    result = check_parity(to_onnx(model, layout, "binary", 2), model, typed, "binary")
    assert result["max_abs_diff"] <= 1e-5


@pytest.mark.parametrize(
    "features",
    [
        {"encoding": "ordinal"},
        {"interactions": True},
        {"clip_quantiles": None, "missing_indicators": False},
        {"pca_components": 4},
    ],
)
def test_feature_options_parity(features: dict) -> None:
    df, y = frame()
    s = spec(**features)
    layout = plan_layout(df, KINDS, 30)
    typed = model_frame(df, layout)
    model = build_pipeline(s, layout, "logistic", {"C": 1.0}).fit(typed, y)
    check_parity(to_onnx(model, layout, "binary", 2), model, typed, "binary")


def test_regression_parity() -> None:
    df, _ = frame()
    target = df["b"].to_numpy() * 3
    layout = plan_layout(df, {"numeric": ["a"], "categorical": ["c"], "datetime": ["ts"]}, 30)
    typed = model_frame(df, layout)
    model = build_pipeline(spec("regression"), layout, "hist_gb", DEFAULTS["hist_gb"])
    model.fit(typed, target)
    check_parity(to_onnx(model, layout, "regression", 0), model, typed, "regression")


def test_unseen_category_and_missing_served() -> None:
    df, y = frame()
    layout = plan_layout(df, KINDS, 30)
    model = build_pipeline(spec(), layout, "logistic", {"C": 1.0}).fit(model_frame(df, layout), y)
    sess = session(to_onnx(model, layout, "binary", 2))
    row = pd.DataFrame(
        {"a": [np.nan], "b": [1.0], "c": ["never-seen"], "flag": [None], "ts": [pd.NaT]}
    )
    labels, proba = sess.run(None, feeds(model_frame(row, layout)))
    assert labels.shape == (1,) and np.isclose(proba.sum(), 1.0)


def test_parity_failure_shows_both_numbers() -> None:
    df, y = frame()
    layout = plan_layout(df, KINDS, 30)
    typed = model_frame(df, layout)
    model = build_pipeline(spec(), layout, "logistic", {"C": 1.0}).fit(typed, y)
    graph = to_onnx(model, layout, "binary", 2)
    other = build_pipeline(spec(), layout, "logistic", {"C": 1.0}).fit(typed, 1 - y)
    with pytest.raises(ExportError, match=r"max \|Δprobability\| = .* label\(s\) differ"):
        check_parity(graph, other, typed, "binary")


def test_feature_spec_defaults_used() -> None:
    assert FeatureSpec().missing_indicators
