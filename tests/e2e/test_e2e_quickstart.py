"""``ferry quickstart``: the whole lab half on builtin:fraud, in under three minutes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Ferry

WALL_CLOCK_LIMIT_S = 180  # the target on this machine


@pytest.mark.slow
def test_quickstart_trains_registers_and_aliases_production(ferry: Ferry) -> None:
    run = ferry("quickstart", timeout=WALL_CLOCK_LIMIT_S + 120)
    run.ok()
    assert run.seconds < WALL_CLOCK_LIMIT_S, f"took {run.seconds:.0f} s\n{run}"

    out = run.stdout
    assert "builtin:fraud" in out and "Leaderboard (roc_auc, CV)" in out
    assert "gate min.roc_auc: pass" in out
    assert "registered: fraud:1" in out and "alias: fraud@production -> 1" in out
    bundle = run.printed_path("bundle", ferry.cwd)
    report = run.printed_path("report", ferry.cwd)
    assert (bundle / "model.onnx").is_file() and report.is_file()
    assert (report.parent / "metrics.json").is_file()
    assert (report.parent / "model_card.md").is_file()
    assert (bundle.parent / "leaderboard.json").is_file()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["name"] == "fraud" and manifest["task"] == "binary"
    assert manifest["parity"]["max_abs_diff"] <= 1e-5
    assert manifest["metrics"]["test"]["roc_auc"] >= 0.8  # the quick start's own gate

    shown = ferry("registry", "show", "fraud@production").ok()
    assert "fraud:1" in shown.stdout
    assert any(
        line.startswith("│ aliases") and "production" in line for line in shown.stdout.splitlines()
    ), str(shown)
