"""The lab on text: builtin:reviews trained, evaluated and exported as one graph taking strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferry.core.bundle import verify_bundle
from ferry.core.spec import parse_spec
from ferry.errors import DataError
from ferry.export.parity import session
from ferry.lab import TrainOutcome, train


def spec(**over: Any) -> Any:
    base: dict[str, Any] = {
        "name": "reviews",
        "task": "classification",
        "data": {"source": "builtin:reviews", "target": "target", "rows": 2_500},
        "features": {"text": {}},
        "search": {"trials": 3, "time_budget_s": 15, "folds": 2, "metric": "accuracy"},
        "constraints": {"max_latency_p99_ms": 50, "max_size_mb": 10},
        "gates": {"min": {"accuracy": 0.8}},
    }
    return parse_spec({**base, **over})


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> TrainOutcome:
    return train(spec(), tmp_path_factory.mktemp("text") / "run")


def test_text_model_trains_and_exports_in_parity(outcome: TrainOutcome) -> None:
    manifest = verify_bundle(outcome.bundle_dir)
    assert manifest.task == "multiclass" and manifest.labels == ["negative", "neutral", "positive"]
    assert manifest.lineage.family == "logistic"
    assert 0.82 <= manifest.metrics.test["accuracy"] <= 0.96 and outcome.gates_passed
    assert manifest.parity["max_abs_diff"] <= 1e-5 and manifest.parity["label_mismatches"] == 0
    assert (outcome.bundle_dir / "model.onnx").stat().st_size < 1_000_000


def test_signature_declares_the_text_input(outcome: TrainOutcome) -> None:
    inputs = {i.name: i for i in outcome.manifest.signature.inputs}
    review = inputs["review"]
    assert (review.kind, review.dtype, review.shape, review.nullable) == (
        "text",
        "string",
        [-1, 1],
        True,
    )
    assert review.categories is None and "ASCII" in (review.description or "")
    assert inputs["product"].kind == "categorical"
    # Text has no binned reference (see export.manifest); the prediction reference covers it.
    reference = outcome.manifest.reference
    assert reference is not None and reference.prediction is not None
    assert "review" not in {**reference.numeric, **reference.categorical}


def test_graph_scores_raw_strings(outcome: TrainOutcome) -> None:
    sess = session((outcome.bundle_dir / "model.onnx").read_bytes())
    # The last is how retraining's scoring spells a missing string: it must score as empty.
    reviews = [
        "Waste of money, it fell apart",
        "LOVE IT!!! Highly recommend",
        "",
        "😀",
        "__missing__",
    ]
    feeds = {
        "review": np.asarray(reviews, dtype=object).reshape(-1, 1),
        "product": np.asarray(["toys"] * len(reviews), dtype=object).reshape(-1, 1),
    }
    labels, probabilities = sess.run(None, feeds)
    assert labels[:2].tolist() == [0, 2]  # negative, positive
    for no_known_word in probabilities[3:]:
        np.testing.assert_allclose(no_known_word, probabilities[2], atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_text_option_without_text_columns_names_the_fix(tmp_path: Path) -> None:
    bare = spec(data={"source": "builtin:breast_cancer", "target": "target"}, gates={"min": {}})
    with pytest.raises(DataError, match=r"features\.text is set but no column"):
        train(bare, tmp_path / "run")
