from ferry.core.spec import GatesSpec
from ferry.evaluation.gates import check_gates


def test_min_and_max_gates_pass_and_fail_with_readable_details() -> None:
    gates = GatesSpec(min={"roc_auc": 0.9, "recall": 0.5}, max={"log_loss": 0.4, "brier": 0.1})
    metrics = {"roc_auc": 0.871, "recall": 0.6, "log_loss": 0.3, "brier": 0.2}
    results = {r.name: r for r in check_gates(metrics, gates)}
    assert list(results) == ["min.roc_auc", "min.recall", "max.log_loss", "max.brier"]
    assert not results["min.roc_auc"].passed
    assert results["min.roc_auc"].detail == "roc_auc 0.871 < required 0.9"
    assert results["min.recall"].passed
    assert results["min.recall"].detail == "recall 0.600 >= required 0.5"
    assert results["max.log_loss"].passed
    assert results["max.log_loss"].detail == "log_loss 0.300 <= allowed 0.4"
    assert not results["max.brier"].passed
    assert results["max.brier"].detail == "brier 0.200 > allowed 0.1"
    assert results["min.roc_auc"].value == 0.871 and results["min.roc_auc"].limit == 0.9


def test_boundary_value_passes() -> None:
    [result] = check_gates({"f1": 0.8}, GatesSpec(min={"f1": 0.8}))
    assert result.passed


def test_missing_or_nan_metric_fails_and_says_so() -> None:
    gates = GatesSpec(min={"roc_auc": 0.9, "pr_auc": 0.5})
    missing, undefined = check_gates({"pr_auc": float("nan")}, gates)
    assert not missing.passed and missing.value is None
    assert "roc_auc is missing" in missing.detail
    assert not undefined.passed and undefined.value is None
    assert "undefined (NaN)" in undefined.detail


def test_close_values_never_print_as_equal() -> None:
    [result] = check_gates({"roc_auc": 0.89996}, GatesSpec(min={"roc_auc": 0.9}))
    assert not result.passed
    assert result.detail == "roc_auc 0.89996 < required 0.9"


def test_fairness_gate() -> None:
    gates = GatesSpec(max_fairness_gap=0.1)
    [ok] = check_gates({}, gates, fairness_gap=0.05)
    [bad] = check_gates({}, gates, fairness_gap=0.25)
    [unmeasured] = check_gates({}, gates, fairness_gap=None)
    assert ok.passed and ok.name == "max_fairness_gap"
    assert not bad.passed and bad.detail == "fairness gap 0.250 > allowed 0.1"
    assert not unmeasured.passed and "data.sensitive" in unmeasured.detail


def test_no_gates_configured_means_no_results() -> None:
    assert check_gates({"roc_auc": 0.5}, GatesSpec(), fairness_gap=0.9) == []
