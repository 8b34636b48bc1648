"""`ferry train` and `ferry init`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ferry.cli.console import console
from ferry.cli.context import actor, open_registry, run_dir
from ferry.cli.progress import RichObserver
from ferry.cli.specs import TEMPLATE
from ferry.core.spec import Spec, load_spec, parse_spec
from ferry.errors import SpecError
from ferry.settings import Settings

if TYPE_CHECKING:  # the lab pulls in scikit-learn and friends: import it only to run it
    from ferry.lab import TrainOutcome


def _leaderboard(outcome: TrainOutcome) -> Table:
    table = Table(title=f"Leaderboard ({outcome.search.metric}, CV)", show_lines=False)
    for column in ("#", "family", "score", "± cv", "p99 ms", "MB", "fit s", ""):
        table.add_column(column, justify="right" if column not in ("family", "") else "left")
    for row in outcome.search.leaderboard()[:12]:
        marks = " ".join(
            m
            for m, on in (
                ("chosen", row["chosen"]),
                ("pareto", row["pareto"]),
                ("over budget", not row["within_budget"]),
            )
            if on
        )
        table.add_row(
            str(row["rank"]),
            row["family"],
            f"{row['score']:.4f}",
            f"{row['cv_std']:.4f}",
            _num(row["latency_p99_ms"], 3),
            _num(row["size_mb"], 2),
            f"{row['fit_s']:.2f}",
            marks,
        )
    return table


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary(outcome: TrainOutcome) -> None:
    console.print(_leaderboard(outcome))
    search = outcome.search
    if search.best is not None and search.best.family == "cnn":  # trained, not searched
        console.print(f"cnn: {search.best.note}, trained in {search.elapsed_s:.1f} s")
    else:
        console.print(
            f"search: {search.trials_started} trials ({search.pruned} pruned) in "
            f"{search.elapsed_s:.1f} s"
        )
    metrics = outcome.evaluation.metrics
    shown = ", ".join(
        f"{k} {v:.4f}"
        for k, v in metrics.items()
        if k in ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "rmse", "mae", "r2")
    )
    console.print(f"test: {shown}")
    if outcome.evaluation.threshold is not None:
        console.print(f"decision threshold: {outcome.evaluation.threshold:.4f}")
    for gate in outcome.evaluation.gates:
        mark = "[green]pass[/]" if gate.passed else "[red]FAIL[/]"
        console.print(f"gate {gate.name}: {mark} ({gate.detail})")
    console.print(f"parity: max |Δ| {outcome.manifest.parity.get('max_abs_diff', 0):.2e}")
    console.print(f"bundle: {outcome.bundle_dir}")
    console.print(f"report: {outcome.report.html}")
    if outcome.version:
        console.print(f"registered: [bold]{outcome.version.name}:{outcome.version.version}[/]")


def run_training(
    spec: Spec, settings: Settings, alias: str | None, dask_address: str | None = None
) -> TrainOutcome:
    from ferry.lab import train

    registry = open_registry(settings)
    with RichObserver(spec.search.time_budget_s) as observer:
        outcome = train(
            spec,
            run_dir(settings, spec.name),
            registry=registry,
            actor=actor(settings),
            observer=observer,
            dask_address=dask_address,
        )
    _summary(outcome)
    if alias and outcome.version:
        if not outcome.gates_passed:
            failed = [g.name for g in outcome.evaluation.gates if not g.passed]
            console.print(f"[red]not aliasing {alias}: gate(s) failed: {', '.join(failed)}[/]")
            raise typer.Exit(1)
        registry.set_alias(
            spec.name,
            alias,
            outcome.version.version,
            actor=actor(settings),
            reason="passed gates in ferry train",
        )
        console.print(f"alias: {spec.name}@{alias} -> {outcome.version.version}")
    return outcome


def train_command(
    spec_path: Path = typer.Argument(..., help="Path to ferry.yaml."),
    alias: str | None = typer.Option(None, help="Alias the new version if every gate passes."),
    time_budget: float | None = typer.Option(None, help="Override search.time_budget_s."),
    dask: str | None = typer.Option(
        None, "--dask", help="Fit search trials on this Dask scheduler, e.g. tcp://host:8786."
    ),
) -> None:
    """Search, train, evaluate, export and register the model a ferry.yaml describes."""
    spec = load_spec(spec_path)
    if time_budget is not None:
        spec.search.time_budget_s = time_budget
    run_training(spec, Settings(), alias, dask)


def init_command(
    name: str = typer.Argument(..., help="Model name."),
    source: str = typer.Option("data.csv", help="Data file or builtin:NAME."),
    target: str = typer.Option("target", help="Target column."),
    output: Path = typer.Option(Path("ferry.yaml"), "--output", "-o"),
    force: bool = typer.Option(False, help="Overwrite an existing file."),
) -> None:
    """Write a commented ferry.yaml to start from."""
    if output.exists() and not force:
        raise SpecError(f"{output} already exists; pass --force to overwrite it")
    text = TEMPLATE.format(name=name, source=source, target=target)
    import yaml

    parse_spec(yaml.safe_load(text), str(output))  # the template must always be valid
    output.write_text(text)
    console.print(f"wrote {output}; edit data.source and data.target, then `ferry train {output}`")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("init")(init_command)
