"""Every command and group answers ``--help`` with exit 0 and says what it does."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Ferry, Run

# Each listing names its commands with the first line of their description.
LISTINGS = {
    (): {
        "quickstart": "The whole loop on builtin:fraud",
        "retrain": "Train a challenger on the spec's data",
        "predict": "Score a large file in bounded memory",
        "import": "Make a model trained elsewhere into a bundle",
        "export": "Quantize a registered version to INT8",
        "init": "Write a commented ferry.yaml",
        "train": "Search, train, evaluate, export and register",
        "data": "Look at data before training on it.",
        "registry": "Model versions, aliases and their history",
    },
    ("registry",): {
        "list": "List registered models with their latest version",
        "show": "Show a model's versions, or one version's",
        "register": "Register a bundle directory",
        "alias": "Point an alias at a version",
        "unalias": "Remove an alias.",
        "events": "Show what changed, who changed it",
        "rollback": "Move an alias back to the version",
    },
}

# command -> words its own help page must contain (description and options)
COMMANDS = {
    ("quickstart",): ["builtin:fraud", "canary, promote", "--time-budget", "--no-serve"],
    ("retrain",): ["gate it against", "--spec", "--trigger", "--observe", "--no-rollout"],
    ("init",): ["Write a commented ferry.yaml", "--source", "--target", "--output", "--force"],
    ("train",): ["Search, train, evaluate, export and register", "--alias", "--time-budget"],
    ("data",): ["Look at data before training on it.", "inspect", "Infer the schema"],
    ("data", "inspect"): ["quality problems with counts", "--target", "--rows", "builtin:NAME"],
    ("registry", "list"): ["latest version and aliases"],
    ("registry", "show"): ["one version's manifest summary", "fraud@production"],
    ("registry", "alias"): ["Point an alias at a version", "--reason"],
    ("registry", "unalias"): ["Remove an alias", "--reason"],
    ("registry", "events"): ["who changed it", "--limit"],
    ("registry", "register"): ["Register a bundle directory", "--reason"],
}


def _usage(run: Run, command: tuple[str, ...]) -> None:
    run.ok()
    assert run.stderr == "", str(run)
    assert " ".join(("Usage: ferry", *command)) in run.stdout, str(run)


def test_top_level_and_group_help_describe_every_command(ferry: Ferry) -> None:
    runs = ferry.many(*[[*group, "--help"] for group in LISTINGS])
    for (group, commands), run in zip(LISTINGS.items(), runs, strict=True):
        _usage(run, group)
        lines = run.stdout.splitlines()
        for command, description in commands.items():
            listed = [line for line in lines if line.strip(" │").startswith(f"{command} ")]
            assert listed, f"{command!r} is not listed\n{run}"
            assert description in listed[0], f"{command!r} is not described\n{run}"
    assert "--debug" in runs[0].stdout and "Show tracebacks" in runs[0].stdout
    assert not ferry.home.exists()  # help creates no state


@pytest.mark.slow
def test_every_command_has_its_own_help_page(ferry: Ferry) -> None:
    runs = ferry.many(*[[*command, "--help"] for command in COMMANDS])
    for (command, words), run in zip(COMMANDS.items(), runs, strict=True):
        _usage(run, command)
        for word in words:
            assert word in run.stdout, f"{word!r} missing from the help\n{run}"
