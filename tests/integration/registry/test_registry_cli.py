"""``ferry registry`` commands, run in-process with Typer's CliRunner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ferry.cli import console as console_module
from ferry.cli.registry import registry_app
from ferry.errors import NotFoundError, RefError
from ferry.registry import open_registry


@pytest.fixture
def invoke(
    registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    monkeypatch.setattr(console_module.console, "_width", 200)  # no wrapped table cells
    env = {
        "FERRY_HOME": str(tmp_path / "home"),
        "FERRY_REGISTRY_URL": registry_url,
        "FERRY_ARTIFACTS_URL": "",
        "FERRY_ACTOR": "alice",
    }

    def run(*args: str) -> Result:
        return CliRunner().invoke(registry_app, list(args), env=env)

    return run


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_register_list_and_show(
    invoke: Callable[..., Result], make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    assert "No models registered yet" in _ok(invoke("list"))
    bundle = make_bundle(test_metrics={"auc": 0.9123})
    assert "registered fraud:1" in _ok(invoke("register", "fraud", str(bundle)))
    assert "registered fraud:2" in _ok(invoke("register", "fraud", str(bundle), "--reason", "r"))
    _ok(invoke("alias", "fraud", "production", "1", "--reason", "first release"))

    listing = _ok(invoke("list"))
    assert "fraud" in listing and "production -> 1" in listing
    versions = _ok(invoke("show", "fraud"))
    assert "auc=0.9123" in versions and "production" in versions
    one = _ok(invoke("show", "fraud@production"))
    assert "fraud:1" in one and "x: float32" in one and "model.onnx" in one
    assert (tmp_path / "home" / "artifacts" / "bundles" / "fraud").is_dir()  # default location


def test_alias_unalias_and_events(
    invoke: Callable[..., Result], make_bundle: Callable[..., Path]
) -> None:
    _ok(invoke("register", "fraud", str(make_bundle())))
    _ok(invoke("register", "fraud", str(make_bundle())))
    assert "fraud@production -> fraud:1" in _ok(invoke("alias", "fraud", "production", "1"))
    _ok(invoke("alias", "fraud", "production", "2", "--reason", "[bold]better[/bold]"))
    assert "removed fraud@production" in _ok(invoke("unalias", "fraud", "production"))

    output = _ok(invoke("events", "fraud", "--limit", "2"))
    assert "alias_deleted" in output and "alias_set" in output and "registered" not in output
    assert "alice" in output and "from=2" in output
    assert "[bold]better[/bold]" in output  # free text is shown as written, not as markup
    everything = _ok(invoke("events"))
    assert everything.count("registered") == 2


def test_errors_surface_as_ferry_errors(
    invoke: Callable[..., Result], make_bundle: Callable[..., Path]
) -> None:
    _ok(invoke("register", "fraud", str(make_bundle())))

    missing = invoke("show", "fraud@staging")
    assert isinstance(missing.exception, NotFoundError)
    assert "no alias 'staging'" in str(missing.exception)
    assert isinstance(invoke("alias", "fraud", "production", "7").exception, NotFoundError)
    assert isinstance(invoke("unalias", "fraud", "nope").exception, NotFoundError)
    assert isinstance(invoke("show", "../x").exception, RefError)
    assert invoke("events", "--limit", "0").exit_code != 0


def test_the_cli_and_the_api_share_one_registry(
    invoke: Callable[..., Result],
    make_bundle: Callable[..., Path],
    registry_url: str,
    tmp_path: Path,
) -> None:
    _ok(invoke("register", "fraud", str(make_bundle())))
    _ok(invoke("alias", "fraud", "production", "1", "--reason", "ship it"))

    with open_registry(registry_url, str(tmp_path / "home" / "artifacts")) as registry:
        assert registry.resolve("fraud@production").version == 1
        event = registry.events("fraud", limit=1)[0]
    assert (event.actor, event.reason) == ("alice", "ship it")
