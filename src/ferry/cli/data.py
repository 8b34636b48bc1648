"""`ferry data inspect`: schema, quality problems and class balance of a data file."""

from __future__ import annotations

import typer
from rich.table import Table

from ferry.cli.console import console

data_app = typer.Typer(help="Look at data before training on it.", no_args_is_help=True)

SEVERITY_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


@data_app.command("inspect")
def inspect_command(
    source: str = typer.Argument(..., help="CSV/Parquet path or builtin:NAME."),
    target: str | None = typer.Option(
        None, help="Target column (enables leak and balance checks)."
    ),
    rows: int | None = typer.Option(None, help="Rows for builtin generators."),
) -> None:
    """Infer the schema and report quality problems with counts (exit 1 on an error-level one)."""
    from ferry.data.load import load_dataset
    from ferry.data.quality import check_quality
    from ferry.data.schema import infer_schema

    frame = load_dataset(source, rows=rows)
    schema = infer_schema(frame, target)
    console.print(f"[bold]{source}[/]: {len(frame)} rows × {frame.shape[1]} columns")
    table = Table(title="Schema")
    for column in ("column", "kind", "dtype", "missing", "unique"):
        table.add_column(column)
    for info in schema:
        table.add_row(info.name, info.kind, info.dtype, str(info.missing), str(info.unique))
    console.print(table)
    report = check_quality(frame, target, schema)
    _print_issues(report.issues)
    if report.class_balance:
        total = sum(report.class_balance.values())
        balance = ", ".join(f"{k}: {v} ({v / total:.1%})" for k, v in report.class_balance.items())
        console.print(f"class balance: {balance}")
    if report.errors():
        raise typer.Exit(1)


def _print_issues(issues: list) -> None:  # type: ignore[type-arg]
    if not issues:
        console.print("[green]no quality problems found[/]")
        return
    table = Table(title="Quality")
    for column in ("severity", "check", "column", "count", "detail"):
        table.add_column(column)
    for issue in issues:
        style = SEVERITY_STYLE.get(issue.severity, "")
        table.add_row(
            f"[{style}]{issue.severity}[/]",
            issue.check,
            issue.column or "",
            str(issue.count),
            issue.detail,
        )
    console.print(table)
