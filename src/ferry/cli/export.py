"""`ferry export REF --quantize dynamic|static`: an INT8 copy of a registered version.

The copy is scored against its FP32 parent on the spec's test split and registered as a new
version (lineage parent: the FP32 one) only if its metric drops by no more than the spec's
``export.max_quantization_drop``; otherwise the command exits 1 and registers nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer
from rich.table import Table

from ferry.cli.console import console
from ferry.cli.context import actor, open_registry, run_dir
from ferry.cli.progress import RichObserver
from ferry.core.bundle import MODEL, BundleManifest, verify_bundle, write_bundle
from ferry.core.spec import Spec, load_spec
from ferry.errors import SpecError
from ferry.settings import Settings

if TYPE_CHECKING:  # the quantizer pulls in the lab: import it only to run it
    from ferry.export.quantize import Quantized
    from ferry.registry.service import ModelVersion, Registry

METHODS = ("dynamic", "static")


def _check(spec: Spec, manifest: BundleManifest, method: str) -> None:
    if method not in METHODS:
        raise SpecError(f"--quantize: expected one of {list(METHODS)}, received {method!r}")
    if spec.name != manifest.name:
        raise SpecError(
            f"--spec describes model {spec.name!r} but the version is of {manifest.name!r}; "
            "pass the ferry.yaml the version was trained from"
        )
    if manifest.lineage.quantization:
        raise SpecError(
            f"this version is already quantized ({manifest.lineage.quantization}) from version "
            f"{manifest.lineage.parent_version}; quantize the FP32 version instead"
        )
    if manifest.lineage.spec_hash and manifest.lineage.spec_hash != spec.spec_hash():
        console.print(
            "[yellow]warning: the spec differs from the one this version was trained with; "
            "its data and split give the calibration and test rows[/]"
        )


def _quantize(spec: Spec, bundle: Path, manifest: BundleManifest, method: str) -> Quantized:
    from ferry.export.quantize import Method, quantize
    from ferry.lab import holdout

    metric = spec.export.quantization_metric or "accuracy"
    with RichObserver(0) as observer:
        observer.stage("loading the calibration and test rows")
        rows = holdout(spec, manifest)
        observer.stage(f"quantizing ({method}) and scoring FP32 and INT8 on the test split")
        graph = (bundle / MODEL).read_bytes()
        return quantize(graph, cast(Method, method), rows, manifest, metric)


def _table(result: Quantized) -> Table:
    table = Table(title=f"Quantization ({result.method}) on the test split")
    for column in ("", "FP32", "INT8"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row(
        result.metric, f"{result.before[result.metric]:.4f}", f"{result.after[result.metric]:.4f}"
    )
    table.add_row("graph MB", f"{result.size_mb_fp32:.3f}", f"{result.size_mb_int8:.3f}")
    table.add_row("same prediction", "", f"{result.agreement:.2%}")
    return table


def _register(
    registry: Registry,
    settings: Settings,
    parent: ModelVersion,
    out: Path,
    method: str,
) -> ModelVersion:
    version = registry.register(
        parent.name,
        out,
        actor=actor(settings),
        reason=f"ferry export --quantize {method} of {parent.name}:{parent.version}",
    )
    console.print(
        f"registered: [bold]{version.name}:{version.version}[/] "
        f"(INT8 {method}, parent {parent.name}:{parent.version})"
    )
    return version


def export_command(
    ref: str = typer.Argument(..., help="Registered version: NAME:VERSION or NAME@ALIAS."),
    quantize: str = typer.Option(
        ..., "--quantize", help="dynamic, or static (calibrated on the validation split)."
    ),
    spec_path: Path = typer.Option(
        Path("ferry.yaml"),
        "--spec",
        help="The ferry.yaml the version was trained from: data, split, allowed drop.",
    ),
    alias: str | None = typer.Option(None, help="Alias the new version if it is accepted."),
) -> None:
    """Quantize a registered version to INT8 and register it if its metric holds up."""
    spec = load_spec(spec_path)
    settings = Settings()
    registry = open_registry(settings)
    parent = registry.resolve(ref)
    scratch = Path(tempfile.mkdtemp(prefix="ferry-export-"))
    try:
        bundle = registry.fetch(ref, scratch)
        manifest = verify_bundle(bundle)
        _check(spec, manifest, quantize)
        result = _quantize(spec, bundle, manifest, quantize)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    console.print(_table(result))
    out = run_dir(settings, f"{spec.name}-int8") / "bundle"
    _write(manifest, result, parent.version, out)
    allowed = spec.export.max_quantization_drop
    if result.drop > allowed:
        console.print(
            f"[red]refused: {result.metric} drops by {result.drop:.4f} "
            f"({result.before[result.metric]:.4f} -> {result.after[result.metric]:.4f}), more "
            f"than export.max_quantization_drop={allowed}; not registered. Try --quantize "
            f"static, or raise the limit in {spec_path.name}.[/] Bundle kept at {out}"
        )
        raise typer.Exit(1)
    version = _register(registry, settings, parent, out, quantize)
    if alias:
        registry.set_alias(
            version.name, alias, version.version, actor=actor(settings), reason="ferry export"
        )
        console.print(f"alias: {version.name}@{alias} -> {version.version}")


def _write(manifest: BundleManifest, result: Quantized, parent: int, out: Path) -> None:
    from ferry.export.quantize import quantized_manifest

    write_bundle(out, quantized_manifest(manifest, result, parent), result.model_bytes)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
