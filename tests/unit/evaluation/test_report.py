import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ferry.core.spec import GatesSpec
from ferry.evaluation.assessment import TEST_THRESHOLD_NOTE
from ferry.evaluation.metrics import classification_metrics
from ferry.evaluation.report import (
    Evaluation,
    evaluate_classifier,
    evaluate_regressor,
    write_report,
)
from ferry.evaluation.threshold import choose_threshold

LABELS = ["ok", "fraud"]
PAYLOAD = re.compile(r"base64,[A-Za-z0-9+/=]+")


def _binary(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.2
    positive = np.clip(0.3 * truth + rng.random(n) * 0.7, 0, 1)
    return np.where(truth, "fraud", "ok"), np.column_stack([1 - positive, positive])


def _leaderboard() -> list[dict[str, object]]:
    rows = []
    for rank, (family, score, latency) in enumerate(
        [("hist_gb", 0.91, 2.0), ("logistic", 0.88, 0.1), ("lightgbm", 0.90, 9.0)], start=1
    ):
        rows.append(
            {
                "rank": rank,
                "family": family,
                "score": score,
                "cv_std": 0.01,
                "latency_p99_ms": latency,
                "size_mb": 1.5,
                "fit_s": 2.0,
                "pareto": family != "lightgbm",
                "chosen": family == "hist_gb",
                "within_budget": family != "lightgbm",
                "params": {"max_depth": 3},
            }
        )
    return rows


@pytest.fixture(scope="module")
def binary() -> Evaluation:
    y_test, proba_test = _binary(300, 0)
    y_valid, proba_valid = _binary(200, 1)
    sensitive = pd.DataFrame({"sex": np.random.default_rng(2).choice(["F", "M", None], 300)})
    gates = GatesSpec(min={"roc_auc": 0.99}, max={"log_loss": 5.0}, max_fairness_gap=0.5)
    evaluation = evaluate_classifier(
        y_test,
        proba_test,
        LABELS,
        y_valid=y_valid,
        proba_valid=proba_valid,
        sensitive=sensitive,
        gates=gates,
    )
    evaluation.importance = {"amount": 0.12, "hour": 0.03, "country": -0.001}
    return evaluation


@pytest.fixture(scope="module")
def binary_paths(binary: Evaluation, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("binary")
    extra = {"metric": "roc_auc", "data": {"rows": 1500, "source": "fraud.csv"}}
    write_report(out, name="fraud", evaluation=binary, leaderboard=_leaderboard(), extra=extra)
    return out


def test_binary_threshold_is_chosen_on_validation_and_metrics_use_it(binary: Evaluation) -> None:
    y_valid, proba_valid = _binary(200, 1)
    expected = choose_threshold(y_valid == "fraud", proba_valid[:, 1])
    assert binary.threshold == expected
    assert binary.notes == []
    y_test, proba_test = _binary(300, 0)
    assert binary.metrics == classification_metrics(y_test, proba_test, LABELS, expected)
    pred = proba_test[:, 1] >= expected
    truth = y_test == "fraud"
    assert binary.confusion == [
        [int(np.sum(~truth & ~pred)), int(np.sum(~truth & pred))],
        [int(np.sum(truth & ~pred)), int(np.sum(truth & pred))],
    ]
    np.testing.assert_array_equal(binary.score, proba_test[:, 1])


def test_binary_fairness_and_gates(binary: Evaluation) -> None:
    assert binary.fairness is not None
    assert set(binary.fairness["sex"]["groups"]) == {"F", "M", "missing"}
    results = {g.name: g.passed for g in binary.gates}
    assert results == {"min.roc_auc": False, "max.log_loss": True, "max_fairness_gap": True}


def test_without_validation_the_threshold_comes_from_test_with_a_note() -> None:
    y_test, proba_test = _binary(300, 0)
    evaluation = evaluate_classifier(y_test, proba_test, LABELS)
    assert evaluation.threshold == choose_threshold(y_test == "fraud", proba_test[:, 1])
    assert evaluation.notes == [TEST_THRESHOLD_NOTE]
    assert evaluation.gates == [] and evaluation.fairness is None


def test_recall_strategy_is_honoured() -> None:
    y_test, proba_test = _binary(300, 0)
    evaluation = evaluate_classifier(
        y_test, proba_test, LABELS, strategy="recall", recall_target=0.95
    )
    assert evaluation.metrics["recall"] >= 0.95


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.refs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "src" and tag == "img":
                self.images.append(value or "")
            elif name in ("src", "href"):
                self.refs.append(value or "")


def test_html_report_is_self_contained(binary_paths: Path) -> None:
    text = (binary_paths / "report.html").read_text()
    parser = _Tags()
    parser.feed(text)
    # confusion, ROC, PR, calibration, importance, leaderboard scatter
    assert len(parser.images) == 6
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert parser.refs == [] and not {"script", "link", "iframe"} & parser.tags
    assert "http" not in PAYLOAD.sub("", text)
    for section in ("summary", "gates", "plots", "importance", "leaderboard", "fairness"):
        assert f'id="{section}"' in text
    assert "roc_auc" in text and "decision threshold" in text and "FAIL" in text


def test_metrics_json_is_strict_json(binary: Evaluation, binary_paths: Path) -> None:
    def reject(token: str) -> None:
        raise AssertionError(f"non-JSON token {token}")

    document = json.loads((binary_paths / "metrics.json").read_text(), parse_constant=reject)
    assert document["threshold"] == binary.threshold
    assert document["metrics"]["roc_auc"] == pytest.approx(binary.metrics["roc_auc"])
    assert document["confusion"] == binary.confusion
    assert document["gates"][0]["name"] == "min.roc_auc"
    assert document["leaderboard"][0]["family"] == "hist_gb"
    assert "sex" in document["fairness"]


def test_nan_metrics_become_null(tmp_path: Path) -> None:
    y = np.array(["ok", "ok", "ok"])
    evaluation = evaluate_classifier(y, np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]), LABELS)
    assert math.isnan(evaluation.metrics["roc_auc"])
    paths = write_report(tmp_path, name="tiny", evaluation=evaluation, leaderboard=[])
    text = paths.metrics_json.read_text()
    assert "NaN" not in text
    assert json.loads(text)["metrics"]["roc_auc"] is None
    assert "one class only" in paths.model_card.read_text()


def test_model_card_holds_metrics_threshold_fairness_and_limitations(
    binary: Evaluation, binary_paths: Path
) -> None:
    card = (binary_paths / "model_card.md").read_text()
    assert card.startswith("# Model card: fraud")
    assert f"| roc_auc | {binary.metrics['roc_auc']:.4f} |" in card
    assert f"{binary.threshold:.4f}" in card
    assert "## Intended use" in card and "EDIT" in card
    assert "**source**: fraud.csv" in card
    assert "| sex |" in card
    assert "Gate failed: roc_auc" in card
    assert "Class imbalance" in card
    assert "ferry serve fraud@production" in card


def test_multiclass_path(tmp_path: Path) -> None:
    labels = ["x", "y", "z"]
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 3, 150)
    proba = rng.dirichlet([1, 1, 1], 150)
    proba[np.arange(150), codes] += 1.0
    proba /= proba.sum(axis=1, keepdims=True)
    y = np.array(labels)[codes]
    evaluation = evaluate_classifier(
        y, proba, labels, sensitive=pd.DataFrame({"g": rng.choice(["a", "b"], 150)})
    )
    assert evaluation.threshold is None and evaluation.notes == []
    assert evaluation.score.shape == (150, 3)
    assert np.sum(evaluation.confusion) == 150
    assert np.trace(evaluation.confusion) == int(np.sum(proba.argmax(axis=1) == codes))
    assert evaluation.fairness is not None
    assert set(evaluation.fairness) == {"g (class x)", "g (class y)", "g (class z)"}
    paths = write_report(tmp_path, name="iris", evaluation=evaluation, leaderboard=_leaderboard())
    parser = _Tags()
    parser.feed(paths.html.read_text())
    assert len(parser.images) == 5  # confusion, ROC, PR, calibration, leaderboard scatter


def test_regression_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.1, size=200)
    evaluation = evaluate_regressor(y, pred, gates=GatesSpec(max={"rmse": 0.05}))
    assert evaluation.task == "regression" and evaluation.labels is None
    assert evaluation.metrics["rmse"] == pytest.approx(np.sqrt(np.mean((pred - y) ** 2)))
    [gate] = evaluation.gates
    assert not gate.passed and gate.detail.startswith("rmse ")
    paths = write_report(tmp_path, name="price", evaluation=evaluation, leaderboard=[])
    text = paths.html.read_text()
    parser = _Tags()
    parser.feed(text)
    assert len(parser.images) == 2  # predicted vs actual, residuals
    assert 'id="fairness"' not in text
    document = json.loads(paths.metrics_json.read_text())
    assert document["task"] == "regression" and document["threshold"] is None
    assert "| rmse |" in paths.model_card.read_text()
