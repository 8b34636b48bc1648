"""`ferry retrain NAME --spec ferry.yaml`: a challenger, its gates, and a rollout."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ferry.cli.console import console
from ferry.cli.progress import RichObserver
from ferry.core.refs import check_name
from ferry.core.spec import Spec, load_spec
from ferry.errors import SpecError
from ferry.settings import Settings

if TYPE_CHECKING:
    from ferry.retraining.job import RetrainOutcome


def _check_spec(name: str, spec: Spec) -> None:
    if spec.name != name:
        raise SpecError(
            f"the spec describes model {spec.name!r}, not {name!r}: pass the ferry.yaml of "
            f"{name!r} with --spec"
        )


def run_retrain(
    spec: Spec, settings: Settings, *, trigger: str, reason: str, roll_out: bool
) -> RetrainOutcome:
    from ferry.cli.context import actor, open_registry
    from ferry.monitoring.predlog import open_store
    from ferry.retraining.job import RetrainJob

    budget = spec.retraining.time_budget_s or spec.search.time_budget_s
    store = open_store(settings.home / "predictions", settings.prediction_log_url)
    with RichObserver(budget) as observer:
        job = RetrainJob(
            spec,
            open_registry(settings),
            store,
            settings.home,
            actor=actor(settings),
            trigger=trigger,
            reason=reason,
            observer=observer,
            roll_out=roll_out,
            on_step=lambda text: console.print(f"[bold]retrain[/] {text}"),
        )
        return job.run()


def retrain_command(
    name: str = typer.Argument(..., help="Model name (its production alias is the champion)."),
    spec_path: Path = typer.Option(Path("ferry.yaml"), "--spec", help="The model's ferry.yaml."),
    reason: str = typer.Option("", help="Why, for the registry's events."),
    trigger: str = typer.Option("manual", help="What started it: manual, schedule, alert, ..."),
    rollout: bool = typer.Option(True, help="Roll a passing challenger out (canary, shadow)."),
    observe: float | None = typer.Option(None, help="Override retraining.rollout.observe_s."),
    time_budget: float | None = typer.Option(None, help="Override the search budget (s)."),
) -> None:
    """Train a challenger on the spec's data plus labelled production rows, gate it against
    the champion and roll it out; exits 1 when it is rejected or rolled back."""
    check_name(name)
    spec = load_spec(spec_path)
    _check_spec(name, spec)
    if observe is not None:
        spec.retraining.rollout.observe_s = observe
    if time_budget is not None:
        spec.retraining.time_budget_s = time_budget
    outcome = run_retrain(
        spec,
        Settings(),
        trigger=trigger,
        reason=reason or f"ferry retrain ({trigger})",
        roll_out=rollout,
    )
    console.print(f"verdict: {outcome.verdict_html}")
    promoted = outcome.rollout is not None and outcome.rollout.promoted
    if not outcome.verdict.passed or (rollout and not promoted):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("retrain")(retrain_command)
