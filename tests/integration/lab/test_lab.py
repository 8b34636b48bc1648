"""The lab half end to end on small builtin datasets, with real ONNX Runtime and SQLite."""

import json
import time
from pathlib import Path

import pytest

from ferry.core.bundle import verify_bundle
from ferry.core.spec import parse_spec
from ferry.errors import BudgetError
from ferry.export.parity import session
from ferry.lab import train
from ferry.registry import open_registry


def spec(**over: object):
    base: dict = {
        "name": "bc",
        "task": "classification",
        "data": {"source": "builtin:breast_cancer", "target": "target"},
        "search": {
            "families": ["logistic", "hist_gb"],
            "trials": 4,
            "time_budget_s": 20,
            "folds": 3,
        },
        "constraints": {"max_latency_p99_ms": 50, "max_size_mb": 20},
        "gates": {"min": {"roc_auc": 0.9}},
    }
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_spec(base)


def test_train_exports_registers_and_reports(tmp_path: Path) -> None:
    registry = open_registry(f"sqlite:///{tmp_path}/r.db", str(tmp_path / "art"))
    outcome = train(spec(), tmp_path / "run", registry=registry, actor="test")
    manifest = verify_bundle(outcome.bundle_dir)
    assert manifest.task == "binary" and manifest.labels == ["0", "1"]
    assert manifest.parity["max_abs_diff"] <= 1e-5
    assert 0 < manifest.threshold < 1
    assert manifest.metrics.test["roc_auc"] > 0.9
    assert manifest.reference and "mean_radius" in manifest.reference.numeric
    assert manifest.lineage.data_fingerprint and manifest.lineage.spec_hash
    names = [i.name for i in manifest.signature.inputs]
    assert "mean_radius" in names and "target" not in names
    assert outcome.gates_passed
    assert outcome.version is not None and outcome.version.version == 1
    assert registry.resolve("bc:1").spec_hash == manifest.lineage.spec_hash
    board = json.loads((outcome.run_dir / "leaderboard.json").read_text())
    assert board[0]["chosen"] and {"score", "cv_std", "latency_p99_ms", "size_mb"} <= set(board[0])
    html = outcome.report.html.read_text()
    assert "data:image/png;base64" in html
    sess = session((outcome.bundle_dir / "model.onnx").read_bytes())
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]


def test_budget_filters_candidates(tmp_path: Path) -> None:
    with pytest.raises(BudgetError, match="no candidate met the production budgets"):
        train(spec(constraints={"max_size_mb": 0.000001}), tmp_path / "run")


def test_gate_failure_is_reported(tmp_path: Path) -> None:
    outcome = train(spec(gates={"min": {"roc_auc": 0.9999}}), tmp_path / "run")
    assert not outcome.gates_passed
    failed = [g for g in outcome.evaluation.gates if not g.passed]
    assert failed[0].name == "min.roc_auc" and "required 0.9999" in failed[0].detail


def test_regression_and_multiclass(tmp_path: Path) -> None:
    reg = train(
        spec(
            name="diab",
            task="regression",
            data={"source": "builtin:diabetes"},
            search={"metric": "rmse"},
            gates={"min": {}},
        ),
        tmp_path / "reg",
    )
    assert reg.manifest.task == "regression" and reg.manifest.metrics.test["rmse"] > 0
    wine = train(
        spec(name="wine", data={"source": "builtin:wine"}, gates={"min": {}}), tmp_path / "wine"
    )
    assert wine.manifest.task == "multiclass" and wine.manifest.labels == ["0", "1", "2"]


@pytest.mark.slow
def test_wall_clock_budget_is_honoured(tmp_path: Path) -> None:
    budget = 20.0
    s = spec(
        name="fraud",
        data={"source": "builtin:fraud", "target": "is_fraud", "rows": 20000},
        search={
            "families": ["hist_gb", "lightgbm", "extra_trees", "mlp", "logistic"],
            "trials": 1000,
            "time_budget_s": budget,
        },
        gates={"min": {}},
    )
    started = time.perf_counter()
    outcome = train(s, tmp_path / "run")
    assert outcome.search.elapsed_s <= budget * 1.1
    assert outcome.search.elapsed_s >= budget * 0.8  # the budget is used, not abandoned
    assert time.perf_counter() - started < budget * 1.1 + 30  # refit, evaluation and export


def test_leaking_column_stops_training_until_dropped(tmp_path: Path) -> None:
    from ferry.data.builtin import load_builtin
    from ferry.errors import DataError

    frame = load_builtin("breast_cancer")
    frame["diagnosis_code"] = frame["target"] * 10 + 1
    path = tmp_path / "leaky.csv"
    frame.to_csv(path, index=False)
    leaky = spec(data={"source": str(path)}, gates={"min": {}})
    with pytest.raises(DataError, match=r"leak in 'diagnosis_code'.*data\.drop"):
        train(leaky, tmp_path / "run")
    fixed = spec(data={"source": str(path), "drop": ["diagnosis_code"]}, gates={"min": {}})
    outcome = train(fixed, tmp_path / "run2")
    assert "diagnosis_code" not in [i.name for i in outcome.manifest.signature.inputs]
