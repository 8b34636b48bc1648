"""``ferry train`` on small specs, then the registry commands on what it registered."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Ferry, Run

SpecWriter = Callable[..., Path]


def _table_rows(run: Run) -> list[list[str]]:
    """The cells of every body row of the rich tables in stdout."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in run.stdout.splitlines()
        if line.startswith("│")
    ]


def _field(run: Run, name: str) -> str:
    """A value from `registry show NAME:V`'s two-column table."""
    for cells in _table_rows(run):
        if len(cells) == 2 and cells[0] == name:
            return cells[1]
    raise AssertionError(f"no {name!r} field\n{run}")


def test_train_registers_and_the_registry_commands_manage_it(
    ferry: Ferry, bc_spec: SpecWriter
) -> None:
    spec = bc_spec(ferry.cwd / "bc.yaml")
    trained = ferry("train", spec, "--alias", "staging", timeout=180).ok()

    out = trained.stdout
    assert "Leaderboard (roc_auc, CV)" in out
    board = [cells for cells in _table_rows(trained) if len(cells) == 8]
    assert board and {cells[1] for cells in board} <= {"logistic", "hist_gb"}
    assert [cells[0] for cells in board] == [str(i) for i in range(1, len(board) + 1)]
    assert sum("chosen" in cells[7] for cells in board) == 1
    assert re.search(r"^test: .*roc_auc 0\.9\d{3}", out, re.MULTILINE), str(trained)
    assert "registered: bc:1" in out and "alias: bc@staging -> 1" in out

    bundle = trained.printed_path("bundle", ferry.cwd)
    report = trained.printed_path("report", ferry.cwd)
    assert bundle.resolve().is_relative_to(ferry.home.resolve())  # under FERRY_HOME/runs
    assert report.is_file() and report.name == "report.html"
    assert "<html" in report.read_text()[:500].lower()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["name"] == "bc" and manifest["labels"] == ["0", "1"]
    assert manifest["parity"]["max_abs_diff"] <= 1e-5
    onnx_hash = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    assert manifest["files"]["model.onnx"] == onnx_hash

    listing, versions, by_alias, by_number, missing = ferry.many(
        ["registry", "list"],
        ["registry", "show", "bc"],
        ["registry", "show", "bc@staging"],
        ["registry", "show", "bc:1"],
        ["registry", "show", "bc:9"],
    )
    assert _table_rows(listing.ok())[0][:3] == ["bc", "1", "staging -> 1"]
    version_rows = _table_rows(versions.ok())
    assert [row[0] for row in version_rows] == ["1"]
    assert "roc_auc=0.9" in version_rows[0][3] and version_rows[0][4] == "staging"
    for one in (by_alias.ok(), by_number.ok()):
        assert "bc:1" in one.stdout
        assert _field(one, "aliases") == "staging" and _field(one, "task") == "binary"
        assert "mean_radius: float32" in _field(one, "inputs")
        assert _field(one, "files") == "model.onnx"
        assert _field(one, "spec hash") == manifest["lineage"]["spec_hash"]
    line = missing.error_line()
    assert "no version 9" in line and "versions are 1" in line

    moved = ferry("registry", "alias", "bc", "production", "1", "--reason", "test").ok()
    assert "bc@production -> bc:1" in moved.stdout
    removed = ferry("registry", "unalias", "bc", "staging").ok()
    assert "removed bc@staging" in removed.stdout

    history = ferry("registry", "events", "bc").ok()
    events = [row for row in _table_rows(history) if len(row) == 7]
    kinds = [row[3] for row in events]  # newest first
    assert kinds == ["alias_deleted", "alias_set", "alias_set", "registered"], str(history)
    unaliased, production, staging, registered = events
    assert production[5] == "test" and "alias=production" in production[6]
    assert "to=1" in production[6]
    assert "alias=staging" in staging[6] and "gates" in staging[5]
    assert "alias=staging" in unaliased[6]
    assert registered[2] == "1"
    assert {row[4] for row in events} == {"e2e-tester"}  # FERRY_ACTOR


def test_spec_mistakes_fail_at_start_naming_the_key(ferry: Ferry, bc_spec: SpecWriter) -> None:
    typo = bc_spec(
        ferry.cwd / "typo.yaml", data={"source": "builtin:breast_cancer", "targte": "target"}
    )
    metric = bc_spec(ferry.cwd / "metric.yaml", search={"metric": "rmse"})
    typo_run, metric_run, absent = ferry.many(
        ["train", typo], ["train", metric], ["train", "nowhere.yaml"]
    )
    for run in (typo_run, metric_run, absent):
        assert run.returncode == 2, str(run)
        assert "Traceback" not in run.output, str(run)
        assert run.stdout == "", str(run)  # nothing started
    assert "typo.yaml is invalid" in typo_run.stderr
    assert "data.targte: unknown key; remove it or check its spelling" in typo_run.stderr
    assert "data.target: required key is missing; add it" in typo_run.stderr
    assert "search.metric: 'rmse' does not fit task 'classification'" in metric_run.stderr
    assert "choose from ['roc_auc'," in metric_run.stderr
    line = absent.single_error_line()
    assert "'nowhere.yaml' not found" in line and "ferry init" in line
    assert not (ferry.home / "runs").exists()


def test_failed_gate_registers_but_refuses_the_alias(ferry: Ferry, bc_spec: SpecWriter) -> None:
    spec = bc_spec(
        ferry.cwd / "gate.yaml",
        name="bcgate",
        search={"families": ["logistic"], "trials": 2, "time_budget_s": 10},
        gates={"min": {"roc_auc": 0.99999}},
    )
    run = ferry("train", spec, "--alias", "production", timeout=180)
    assert run.returncode == 1, str(run)
    assert "Traceback" not in run.output
    assert re.search(r"^gate min\.roc_auc: FAIL \(roc_auc 0\.9\d+ < required", run.stdout, re.M)
    assert "registered: bcgate:1" in run.stdout
    assert "not aliasing production: gate(s) failed: min.roc_auc" in run.stdout
    assert "alias: bcgate@production" not in run.stdout
    assert run.printed_path("bundle", ferry.cwd).is_dir()

    versions = _table_rows(ferry("registry", "show", "bcgate").ok())
    assert [(row[0], row[4]) for row in versions] == [("1", "")]  # registered, no alias


def test_unmeetable_budget_fails_and_registers_nothing(ferry: Ferry, bc_spec: SpecWriter) -> None:
    spec = bc_spec(
        ferry.cwd / "budget.yaml",
        search={"families": ["logistic"], "trials": 2, "time_budget_s": 10},
        constraints={"max_size_mb": 0.000001},
    )
    run = ferry("train", spec, "--alias", "production", timeout=180)
    assert run.returncode == 2, str(run)
    line = run.error_line()
    assert "no candidate met the production budgets" in line
    assert "max_size_mb=1e-06" in line and "size over budget" in line
    assert "registered:" not in run.stdout
    assert not list(ferry.home.glob("runs/*/bundle"))  # nothing exported
    assert not (ferry.home / "artifacts" / "bundles").exists()  # nothing stored


def test_embedded_defaults_live_under_dot_ferry_in_the_working_directory(ferry: Ferry) -> None:
    del ferry.env["FERRY_HOME"]
    run = ferry("registry", "list").ok()
    assert "No models registered yet." in run.stdout
    assert (ferry.cwd / ".ferry" / "registry.db").is_file()
