"""The bundle: ``model.onnx`` + ``manifest.json``, and the hash check every loader runs."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ferry.core.signature import Signature
from ferry.core.stats import ReferenceStats
from ferry.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODEL = "model.onnx"

Task = Literal["binary", "multiclass", "regression"]


class Lineage(BaseModel):
    spec_hash: str | None = None
    data_fingerprint: str | None = None
    data_rows: int | None = None
    parent_version: int | None = None
    # Retrained versions: the labelled production rows added to the spec's data.
    production_rows: int | None = None
    production_fingerprint: str | None = None
    estimator: str | None = None
    family: str | None = None  # the search family, so a retrain can start from these params
    params: dict[str, Any] = Field(default_factory=dict)
    libraries: dict[str, str] = Field(default_factory=dict)
    quantization: str | None = None  # "dynamic" or "static": an INT8 copy of parent_version


class Metrics(BaseModel):
    cv: dict[str, float] = Field(default_factory=dict)
    test: dict[str, float] = Field(default_factory=dict)
    # Quantized bundles: the metric before and after, the drop, and both graph sizes.
    quantization: dict[str, float] = Field(default_factory=dict)


class ImagePreprocessing(BaseModel):
    """How a server turns PNG/JPEG bytes into the graph's ``[n, C, H, W]`` float input:
    decode, convert to ``color``, resize to ``height`` x ``width``, then per channel
    ``(pixel * scale - mean) / std``. Training prepared its images the same way."""

    input: str = Field(description="The graph input the images feed")
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    color: Literal["grayscale", "rgb"]
    resample: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    scale: float = 1 / 255
    mean: list[float]
    std: list[float]
    formats: list[str] = Field(default_factory=lambda: ["PNG", "JPEG"])
    max_pixels: int = Field(default=16_777_216, gt=0, description="Largest decoded image")

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3


class BundleManifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    name: str
    task: Task
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    signature: Signature
    labels: list[str] | None = None
    threshold: float | None = None
    metrics: Metrics = Field(default_factory=Metrics)
    reference: ReferenceStats | None = None
    lineage: Lineage = Field(default_factory=Lineage)
    parity: dict[str, float] = Field(default_factory=dict)
    preprocessing: ImagePreprocessing | None = None  # image models only
    files: dict[str, str] = Field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hashed_files(directory: Path) -> dict[str, str]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {p.relative_to(directory).as_posix(): sha256_file(p) for p in files}


def write_bundle(directory: Path, manifest: BundleManifest, model_bytes: bytes) -> BundleManifest:
    """Write ``model.onnx`` and any files already in ``directory`` under a hashed manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL).write_bytes(model_bytes)
    manifest = manifest.model_copy(update={"files": _hashed_files(directory)})
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    return manifest


def read_manifest(directory: Path) -> BundleManifest:
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"not a bundle: {MANIFEST} is missing in {directory.name!r}")
    try:
        manifest = BundleManifest.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        raise BundleError(f"bundle {directory.name!r} has an unreadable manifest: {exc}") from exc
    if manifest.schema_version > SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema version {manifest.schema_version} is newer than this Ferry "
            f"understands ({SCHEMA_VERSION}); upgrade Ferry"
        )
    return manifest


def verify_bundle(directory: Path) -> BundleManifest:
    """Read the manifest and check every file's sha256; raise ``BundleError`` on any mismatch."""
    manifest = read_manifest(directory)
    if MODEL not in manifest.files:
        raise BundleError(f"bundle {manifest.name!r} lists no {MODEL}")
    actual = _hashed_files(directory)
    for name, expected in manifest.files.items():
        if name not in actual:
            raise BundleError(f"bundle {manifest.name!r} is missing file {name!r}")
        if actual[name] != expected:
            raise BundleError(
                f"bundle {manifest.name!r}: {name} has sha256 {actual[name][:12]}…, "
                f"manifest says {expected[:12]}…; the bundle was modified or corrupted"
            )
    extra = sorted(set(actual) - set(manifest.files))
    if extra:
        raise BundleError(f"bundle {manifest.name!r} holds files not in its manifest: {extra}")
    return manifest
