from pathlib import Path

import pytest

from ferry.core.bundle import BundleManifest, read_manifest, verify_bundle, write_bundle
from ferry.core.signature import InputSpec, OutputSpec, Signature
from ferry.errors import BundleError


def manifest() -> BundleManifest:
    signature = Signature(
        inputs=[InputSpec(name="x", dtype="float32")],
        outputs=[OutputSpec(name="label", dtype="int64", shape=[-1])],
    )
    return BundleManifest(name="m", task="binary", signature=signature, labels=["0", "1"])


def test_round_trip_and_verify(tmp_path: Path) -> None:
    written = write_bundle(tmp_path, manifest(), b"graph")
    assert set(written.files) == {"model.onnx"}
    assert verify_bundle(tmp_path).files == written.files


def test_tampered_file_fails_with_names(tmp_path: Path) -> None:
    write_bundle(tmp_path, manifest(), b"graph")
    (tmp_path / "model.onnx").write_bytes(b"evil")
    with pytest.raises(BundleError, match=r"model\.onnx has sha256 .* modified or corrupted"):
        verify_bundle(tmp_path)


def test_extra_and_missing_files(tmp_path: Path) -> None:
    write_bundle(tmp_path, manifest(), b"graph")
    (tmp_path / "payload.pkl").write_bytes(b"x")
    with pytest.raises(BundleError, match="not in its manifest"):
        verify_bundle(tmp_path)
    (tmp_path / "payload.pkl").unlink()
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"missing file 'model\.onnx'"):
        verify_bundle(tmp_path)


def test_not_a_bundle_and_newer_schema(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        read_manifest(tmp_path)
    write_bundle(tmp_path, manifest().model_copy(update={"schema_version": 99}), b"g")
    with pytest.raises(BundleError, match="upgrade Ferry"):
        read_manifest(tmp_path)
