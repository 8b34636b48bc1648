"""The artifact store: key validation, path-traversal refusal, round trips over fsspec."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ferry.errors import NotFoundError, RegistryError
from ferry.registry.artifacts import ArtifactStore, check_key


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"graph")
    (root / "sub" / "notes.txt").write_text("hello")
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "key", ["bundles/fraud/0a1b", "a", "models/fraud-v1.2_x/model.onnx", "_staging/x"]
)
def test_safe_keys_pass(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "a/../../b",
        "a/..",
        "/abs/path",
        "a//b",
        "a/b/",
        "",
        ".hidden",
        "a/./b",
        "a\\..\\b",
        "%2e%2e/x",
        "a b",
        "x" * 600,
        "ünï",
    ],
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(RegistryError, match="invalid artifact key"):
        check_key(key)


def test_local_round_trip_exists_and_delete(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    store.put_dir(_tree(tmp_path / "src"), "bundles/fraud/abc")

    assert store.exists("bundles/fraud/abc") and not store.exists("bundles/fraud/zzz")
    dest = store.get_dir("bundles/fraud/abc", tmp_path / "out")
    assert _files(dest) == _files(tmp_path / "src")
    store.delete("bundles/fraud/abc")
    store.delete("bundles/fraud/abc")  # deleting what is gone is fine
    assert not store.exists("bundles/fraud/abc")
    with pytest.raises(NotFoundError, match="nothing under key 'bundles/fraud/abc'"):
        store.get_dir("bundles/fraud/abc", tmp_path / "out2")


def test_file_urls_and_relative_paths_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ArtifactStore("relative/store").put_dir(_tree(tmp_path / "src"), "k")
    assert (tmp_path / "relative" / "store" / "k" / "model.onnx").read_bytes() == b"graph"
    store = ArtifactStore(f"file://{tmp_path / 'relative' / 'store'}")
    assert _files(store.get_dir("k", tmp_path / "out"))["sub/notes.txt"] == b"hello"


def test_traversal_through_keys_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    for call in (
        lambda: store.put_dir(_tree(tmp_path / "src"), "../outside"),
        lambda: store.get_dir("../../etc", tmp_path / "out"),
        lambda: store.exists("/etc/passwd"),
        lambda: store.delete("a/../../b"),
    ):
        with pytest.raises(RegistryError, match="invalid artifact key"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "store"]


def test_a_symlink_inside_the_root_cannot_lead_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s3cret")
    store = ArtifactStore(str(tmp_path / "store"))
    (tmp_path / "store" / "escape").symlink_to(outside)

    with pytest.raises(RegistryError, match="escapes its root"):
        store.get_dir("escape", tmp_path / "out")
    with pytest.raises(RegistryError, match="escapes its root"):
        store.delete("escape/secret")
    assert (outside / "secret").exists()


def test_uploading_a_symlink_is_refused(tmp_path: Path) -> None:
    source = _tree(tmp_path / "src")
    (tmp_path / "private").write_text("key")
    (source / "link").symlink_to(tmp_path / "private")
    store = ArtifactStore(str(tmp_path / "store"))

    with pytest.raises(RegistryError, match="is a symlink"):
        store.put_dir(source, "k")
    with pytest.raises(RegistryError, match="not a directory"):
        store.put_dir(tmp_path / "missing", "k")


def test_remote_filesystems_round_trip_through_fsspec(tmp_path: Path) -> None:
    # memory:// stands in for s3:// here: the same non-local code path, no network.
    store = ArtifactStore(f"memory://ferry-test-{uuid.uuid4().hex}/artifacts")
    store.put_dir(_tree(tmp_path / "src"), "bundles/fraud/abc")

    assert store.exists("bundles/fraud/abc")
    assert _files(store.get_dir("bundles/fraud/abc", tmp_path / "out")) == _files(tmp_path / "src")
    store.delete("bundles/fraud/abc")
    assert not store.exists("bundles/fraud/abc")


def test_unknown_protocols_fail_with_what_is_expected() -> None:
    with pytest.raises(RegistryError, match=r"cannot open artifact store 'nope://x'.*s3://BUCKET"):
        ArtifactStore("nope://x")
