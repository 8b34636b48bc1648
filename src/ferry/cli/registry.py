"""``ferry registry``: list, show, register, alias, unalias, rollback and events."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from ferry.cli import context
from ferry.cli.console import console
from ferry.core.refs import parse_ref
from ferry.registry import Registry
from ferry.registry.records import AliasTarget, Event, ModelVersion
from ferry.settings import Settings

registry_app = typer.Typer(
    help="Model versions, aliases and their history (FERRY_REGISTRY_URL, FERRY_ARTIFACTS_URL).",
    no_args_is_help=True,
)


@contextmanager
def _session() -> Iterator[tuple[Registry, str]]:
    """The registry and the actor, from settings read once for this command."""
    settings = Settings()
    registry = context.open_registry(settings)
    try:
        yield registry, context.actor(settings)
    finally:
        registry.close()


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _link(alias: str, version: int, weight: float | None) -> str:
    return f"{alias} -> {version}" + ("" if weight is None else f" (weight {weight:g})")


def _metrics(metrics: dict[str, Any]) -> str:
    # Test metrics are the honest estimate; cross-validated ones stand in when there are none.
    chosen = metrics.get("test") or metrics.get("cv") or {}
    return ", ".join(f"{name}={value:.4g}" for name, value in sorted(chosen.items())) or "-"


@registry_app.command("list")
def list_models() -> None:
    """List registered models with their latest version and aliases."""
    with _session() as (registry, _):
        summaries = registry.list_models()
    if not summaries:
        console.print("No models registered yet.")
        return
    table = Table("model", "latest", "aliases", "updated")
    for item in summaries:
        weights = item.get("weights", {})
        links = ", ".join(
            _link(alias, v, weights.get(alias)) for alias, v in item["aliases"].items()
        )
        table.add_row(item["name"], str(item["latest_version"]), links, _when(item["updated_at"]))
    console.print(table)


@registry_app.command("show")
def show(
    ref: str = typer.Argument(..., help="fraud (all versions), fraud:3 or fraud@production"),
) -> None:
    """Show a model's versions, or one version's manifest summary."""
    parsed = parse_ref(ref)
    with _session() as (registry, _):
        if parsed.version is None and parsed.alias is None:
            versions = registry.list_versions(parsed.name)
            _print_versions(parsed.name, versions, registry.routes(parsed.name))
        else:
            version = registry.resolve(parsed)
            _print_version(version, registry.routes(parsed.name))


def _aliases(version: ModelVersion, routes: dict[str, AliasTarget]) -> str:
    """The version's aliases, each with its traffic weight where one is set."""
    named = []
    for alias in version.aliases:
        weight = routes[alias].weight if alias in routes else None
        named.append(alias if weight is None else f"{alias} (weight {weight:g})")
    return ", ".join(named)


def _print_versions(
    name: str, versions: list[ModelVersion], routes: dict[str, AliasTarget]
) -> None:
    table = Table("version", "created", "task", "metrics", "aliases", title=name)
    for item in versions:
        aliases = _aliases(item, routes)
        table.add_row(
            str(item.version), _when(item.created_at), item.task, _metrics(item.metrics), aliases
        )
    console.print(table)


def _print_version(version: ModelVersion, routes: dict[str, AliasTarget]) -> None:
    manifest = version.manifest
    table = Table("field", "value", title=version.ref, show_header=False)
    table.add_row("created", _when(version.created_at))
    table.add_row("task", version.task)
    table.add_row("aliases", _aliases(version, routes) or "-")
    table.add_row("metrics", _metrics(version.metrics))
    threshold = manifest.get("threshold")
    table.add_row("threshold", "-" if threshold is None else str(threshold))
    signature = manifest.get("signature", {})
    table.add_row("inputs", ", ".join(_io(spec) for spec in signature.get("inputs", [])))
    table.add_row("outputs", ", ".join(_io(spec) for spec in signature.get("outputs", [])))
    table.add_row("parent version", str(version.parent_version or "-"))
    table.add_row("spec hash", version.spec_hash or "-")
    table.add_row("data fingerprint", version.data_fingerprint or "-")
    table.add_row("files", escape(", ".join(sorted(manifest.get("files", {})))))
    table.add_row("artifact key", version.artifact_key)
    console.print(table)


def _io(spec: dict[str, Any]) -> str:
    return escape(f"{spec.get('name')}: {spec.get('dtype')}")  # names come from the bundle


@registry_app.command("register")
def register(
    name: str = typer.Argument(..., help="Model name; must match the bundle's manifest."),
    bundle: Path = typer.Argument(..., help="Bundle directory (model.onnx + manifest.json)."),
    reason: str = typer.Option("", "--reason", help="Why, recorded in the event."),
) -> None:
    """Register a bundle directory as the model's next version."""
    with _session() as (registry, actor):
        version = registry.register(name, bundle, actor=actor, reason=reason)
    console.print(f"registered {version.ref}")


@registry_app.command("alias")
def alias(
    name: str = typer.Argument(..., help="Model name."),
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="Alias, e.g. production."),
    version: int = typer.Argument(..., help="Version the alias points at."),
    reason: str = typer.Option("", "--reason", help="Why, recorded in the event."),
    weight: float | None = typer.Option(
        None,
        "--weight",
        help="Share of traffic in (0, 1], e.g. 0.1: servers of NAME@production send it to "
        "NAME@canary.",
    ),
) -> None:
    """Point an alias at a version (moving it atomically if it exists)."""
    with _session() as (registry, actor):
        registry.set_alias(name, alias_name, version, actor=actor, reason=reason, weight=weight)
    shown = "" if weight is None else f" (weight {weight:g})"
    console.print(f"{name}@{alias_name} -> {name}:{version}{shown}")


@registry_app.command("rollback")
def rollback(
    name: str = typer.Argument(..., help="Model name."),
    alias_name: str = typer.Option("production", "--alias", help="Alias to move back."),
    reason: str = typer.Option("", "--reason", help="Why, recorded in the event."),
) -> None:
    """Move an alias back to the version it pointed at before its latest move.

    Running it again undoes the rollback (each rollback undoes the latest move).
    """
    with _session() as (registry, actor):
        before = registry.resolve(f"{name}@{alias_name}").version
        after = registry.rollback(name, alias_name, actor=actor, reason=reason)
    console.print(f"{name}@{alias_name} rolled back: {name}:{before} -> {after.ref}")


@registry_app.command("unalias")
def unalias(
    name: str = typer.Argument(..., help="Model name."),
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="Alias to remove."),
    reason: str = typer.Option("", "--reason", help="Why, recorded in the event."),
) -> None:
    """Remove an alias."""
    with _session() as (registry, actor):
        registry.delete_alias(name, alias_name, actor=actor, reason=reason)
    console.print(f"removed {name}@{alias_name}")


@registry_app.command("events")
def events(
    name: str | None = typer.Argument(None, help="Only this model's events."),
    limit: int = typer.Option(20, "--limit", min=1, help="How many, newest first."),
) -> None:
    """Show what changed, who changed it, when and why (newest first)."""
    with _session() as (registry, _):
        found = registry.events(name, limit)
    table = Table("when", "model", "version", "kind", "actor", "reason", "details")
    for item in found:
        table.add_row(*_event_row(item))
    console.print(table)


def _event_row(event: Event) -> list[str]:
    details = ", ".join(f"{key}={value}" for key, value in event.details.items())
    version = "-" if event.version is None else str(event.version)
    # Actor, reason and details are free text from whoever made the change: never markup.
    free_text = [escape(event.actor), escape(event.reason), escape(details)]
    return [_when(event.at), event.model, version, event.kind, *free_text]
