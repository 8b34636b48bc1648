"""`ferry predict`: score a Parquet or CSV file with a registered model or a bundle directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ferry.cli.console import console
from ferry.cli.progress import RowsProgress
from ferry.distributed import DEFAULT_CHUNK_ROWS, ENGINES, Engine
from ferry.errors import BundleError, DataError
from ferry.settings import Settings

if TYPE_CHECKING:  # Arrow and ONNX Runtime load only when a file is scored
    from ferry.distributed.batch import ScoreReport


def _bundle_dir(model: str, settings: Settings) -> Path:
    """A bundle directory as given, or the registry's copy of a ref in the local cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if "/" in model or path.exists():
        raise BundleError(
            f"{model!r} is not a bundle directory; pass a directory holding manifest.json "
            "and model.onnx, or a registry ref like fraud@production or fraud:3"
        )
    from ferry.cli.context import open_registry

    with open_registry(settings) as registry:
        return registry.fetch(model, settings.home / "cache")


def _names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _engine(value: str) -> Engine:
    for engine in ENGINES:
        if value == engine:
            return engine
    raise DataError(f"--engine {value!r} is not one of {', '.join(ENGINES)}")


def _summary(report: ScoreReport) -> None:
    console.print(
        f"scored {report.rows:,} rows in {report.chunks} chunk(s), {report.seconds:.1f} s "
        f"({report.rows_per_s:,.0f} rows/s) -> {report.output}"
    )
    console.print(f"  graph: {report.engine}")
    for worker, chunks in sorted(report.workers.items()):
        console.print(f"  {worker}: {chunks} chunk(s)")


def predict_command(
    model: str = typer.Argument(..., help="fraud@production, fraud:3, fraud, or a bundle dir."),
    data: Path = typer.Argument(..., help="Input file: .parquet, .pq, .csv or .csv.gz."),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Scored file, Parquet or CSV by its name."
    ),
    columns: list[str] | None = typer.Option(
        None,
        "--columns",
        help="Input columns to copy beside the outputs (repeat or comma-separate), e.g. the "
        "id; default: every input column.",
    ),
    chunk_rows: int = typer.Option(
        DEFAULT_CHUNK_ROWS, "--chunk-rows", min=1, help="Rows per chunk; memory grows with it."
    ),
    dask: str | None = typer.Option(
        None, "--dask", help="Score on this Dask scheduler, e.g. tcp://scheduler:8786."
    ),
    engine: str = typer.Option(
        "auto",
        "--engine",
        help="auto: tree ensembles compiled for large files, once they match ONNX Runtime on "
        "the first rows; onnxruntime: the whole graph in ONNX Runtime; compiled: compiled "
        "trees or an error.",
    ),
) -> None:
    """Score a large file in bounded memory: prediction, then one probability per class."""
    from ferry.distributed.batch import score_file

    engine_name = _engine(engine)
    bundle = _bundle_dir(model, Settings())
    with RowsProgress() as progress:
        report = score_file(
            bundle,
            data,
            output,
            chunk_rows=chunk_rows,
            keep=_names(columns),
            dask_address=dask,
            observer=progress,
            engine=engine_name,
        )
    _summary(report)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
