"""`ferry import`: a model trained elsewhere made into a bundle and registered as NAME:N."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from ferry.cli.console import console
from ferry.core.refs import check_alias, check_name
from ferry.errors import SpecError
from ferry.settings import Settings

if TYPE_CHECKING:  # the importers pull in the converters: load them only to run
    from ferry.importing import ImportOutcome, ImportRequest

TASKS = ("classification", "regression")
SCORES = ("probabilities", "logits")
SHOWN_METRICS = ("roc_auc", "pr_auc", "f1", "accuracy", "rmse", "mae", "r2")


def _choice(flag: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise SpecError(f"{flag} {value!r} is not one of {list(allowed)}")
    return value


def _shape(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise SpecError(
            f"--input-shape {text!r} is not a list of integers; give the features of one row, "
            "e.g. --input-shape 30"
        ) from None


def _labels(text: str | None) -> list[str] | None:
    if text is None:
        return None
    labels = [part.strip() for part in text.split(",")]
    if len(labels) < 2 or not all(labels) or len(set(labels)) != len(labels):
        raise SpecError(
            f"--labels {text!r}: expected two or more distinct class names, comma-separated, "
            "in probability-column order, e.g. --labels legit,fraud"
        )
    return labels


def _bundle_dir(settings: Settings, name: str, output: Path | None) -> Path:
    if output is not None:
        return output
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return settings.home / "runs" / f"{name}-import-{stamp}" / "bundle"


def _summary(outcome: ImportOutcome) -> None:
    manifest = outcome.manifest
    inputs = [s.name for s in manifest.signature.inputs]
    shown = ", ".join(inputs[:6]) + (", ..." if len(inputs) > 6 else "")
    classes = f", labels {', '.join(manifest.labels)}" if manifest.labels else ""
    console.print(f"imported {outcome.format} model: {manifest.task}{classes}", highlight=False)
    console.print(escape(f"inputs ({len(inputs)}): {shown}"), highlight=False)
    parity = manifest.parity
    if parity:
        rows = int(parity.get("rows", 0))
        console.print(f"parity: max |Δ| {parity['max_abs_diff']:.2e} on {rows} rows")
    reference = manifest.reference
    if reference is None:
        console.print("drift reference: none (drift monitoring is off for this model)")
    else:
        count = len(reference.numeric) + len(reference.categorical)
        console.print(f"drift reference: {count} inputs and the prediction")
    metrics = manifest.metrics.test
    if metrics:
        text = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in SHOWN_METRICS)
        console.print(f"metrics on the sample: {text}")
    for note in outcome.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(f"bundle: {outcome.bundle_dir}", highlight=False)


def import_command(
    name: str = typer.Argument(..., help="Model name to register the bundle under."),
    model: Path = typer.Argument(
        ...,
        help="Model file: .onnx, scikit-learn .pkl/.joblib, LightGBM .txt, XGBoost .json/.ubj, "
        "PyTorch .pt (TorchScript, or a pickled module).",
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="onnx, sklearn, lightgbm, xgboost or torch; default: by suffix."
    ),
    task: str | None = typer.Option(
        None, "--task", help="classification or regression; default: what the model says."
    ),
    signature: Path | None = typer.Option(
        None,
        "--signature",
        help='Inputs as JSON: {"inputs": [{"name": ..., "dtype": ..., "kind": ...}, ...]}.',
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="Class names in probability-column order, e.g. legit,fraud."
    ),
    sample: str | None = typer.Option(
        None,
        "--sample",
        help="CSV/Parquet or builtin:NAME: parity with the native model, drift reference, "
        "input ranges (without it drift monitoring is off).",
    ),
    target: str | None = typer.Option(None, "--target", help="Target column of --sample."),
    rows: int | None = typer.Option(None, "--rows", min=1, help="Rows of --sample to use."),
    trust: bool = typer.Option(
        False, "--trust", help="Load a pickle (it runs code on load); needs --sha256."
    ),
    sha256: str | None = typer.Option(
        None, "--sha256", help="The file's sha256 (sha256sum FILE); checked before loading."
    ),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="torch: features of one row, e.g. 30."
    ),
    scores: str = typer.Option(
        "probabilities",
        "--scores",
        help="What a bare score output holds: probabilities, or logits (softmax/sigmoid added).",
    ),
    alias: str | None = typer.Option(None, "--alias", help="Point this alias at the version."),
    reason: str = typer.Option("", "--reason", help="Why, recorded in the registry event."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Bundle directory; default: a new run under FERRY_HOME/runs."
    ),
    register: bool = typer.Option(True, "--register/--no-register", help="Register the bundle."),
) -> None:
    """Make a model trained elsewhere into a bundle (ONNX graph + manifest) and register it."""
    from ferry.importing import ImportRequest, import_model

    check_name(name)
    if alias is not None:
        check_alias(alias)
        if not register:
            raise SpecError(f"--alias {alias} needs the bundle registered; drop --no-register")
    request = ImportRequest(
        name=name,
        path=model,
        format=fmt,
        task=_choice("--task", task, TASKS),
        signature=signature,
        labels=_labels(labels),
        sample=sample,
        target=target,
        rows=rows,
        trust=trust,
        sha256=sha256,
        input_shape=_shape(input_shape),
        scores=_choice("--scores", scores, SCORES) or "probabilities",
    )
    settings = Settings()
    out = _bundle_dir(settings, name, output)
    if not register:
        _summary(import_model(request, out))
        return
    _import_and_register(request, out, settings, alias, reason)


def _import_and_register(
    request: ImportRequest, out: Path, settings: Settings, alias: str | None, reason: str
) -> None:
    from ferry.cli import context
    from ferry.importing import import_model

    registry = context.open_registry(settings)
    actor = context.actor(settings)
    try:
        outcome = import_model(request, out, registry=registry, actor=actor, reason=reason or None)
        _summary(outcome)
        assert outcome.version is not None
        console.print(f"registered: [bold]{outcome.version.ref}[/]")
        if alias is not None:
            registry.set_alias(
                request.name, alias, outcome.version.version, actor=actor, reason="ferry import"
            )
            console.print(f"alias: {request.name}@{alias} -> {outcome.version.version}")
    finally:
        registry.close()


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
