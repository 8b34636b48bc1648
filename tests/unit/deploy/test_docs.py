"""docs/deployment.md stays true: every variable Ferry reads is documented there, and every
deployment file it names exists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "deployment.md"


def _commands(command: Any) -> Iterator[Any]:
    """A command and its subcommands (Typer ships its own click: no isinstance checks)."""
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _commands(sub)


def cli_variables() -> set[str]:
    """Environment variables any ``ferry`` command option reads."""
    from ferry.cli import app as cli

    cli._register_groups()
    found: set[str] = set()
    for command in _commands(typer.main.get_command(cli.app)):
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if envvar:
                found.update([envvar] if isinstance(envvar, str) else envvar)
    return found


def test_every_setting_and_cli_variable_is_documented() -> None:
    from ferry.settings import Settings

    text = DOC.read_text()
    variables = {f"FERRY_{name.upper()}" for name in Settings.model_fields} | cli_variables()
    assert {"FERRY_HOME", "FERRY_ALERT_WEBHOOK_URL", "FERRY_TOKEN"} <= variables
    missing = sorted(v for v in variables if f"`{v}`" not in text)
    assert not missing, f"document {missing} in docs/deployment.md"


def test_every_deployment_path_the_doc_names_exists() -> None:
    paths = set(re.findall(r"`((?:deploy|tests|src)/[^`\s*]+)`", DOC.read_text()))
    assert "deploy/compose/docker-compose.yml" in paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing


def test_readme_links_the_deployment_guide() -> None:
    assert "(docs/deployment.md)" in (ROOT / "README.md").read_text()
