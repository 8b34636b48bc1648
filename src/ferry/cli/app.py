"""The ``ferry`` command: one Typer app, one module per command group."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from ferry.cli.console import err_console
from ferry.errors import FerryError

app = typer.Typer(
    name="ferry",
    help="Take machine-learning models from the lab to production and keep them healthy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    _state["debug"] = debug


def _register_groups() -> None:
    # Imported here so `ferry --help` stays fast and a missing extra only breaks its own group.
    from ferry.cli import (
        data,
        export,
        import_cmd,
        monitor,
        monitor_report,
        predict,
        quickstart,
        registry,
        retrain,
        serve,
        train,
    )

    app.add_typer(data.data_app, name="data")
    app.add_typer(registry.registry_app, name="registry")
    app.add_typer(monitor.monitor_app, name="monitor")
    monitor_report.register(monitor.monitor_app)
    train.register(app)
    serve.register(app)
    predict.register(app)
    retrain.register(app)
    import_cmd.register(app)
    quickstart.register(app)
    export.register(app)


def main() -> None:
    _register_groups()
    try:
        app()
    except FerryError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
