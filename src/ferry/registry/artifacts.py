"""Bundle files in a directory tree addressed by keys, over fsspec (local path or ``s3://``).

Keys end up in filesystem paths and object names, so they are checked against a strict pattern
and, on a local store, the resolved path must stay under the root (MLflow's path-traversal CVEs
came from trusting such strings; see REFERENCES.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec

from ferry.errors import NotFoundError, RegistryError

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
MAX_KEY_LENGTH = 512
EXPECTED_URLS = "a directory path, file:///PATH or s3://BUCKET/PREFIX"


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative path of letters, digits, '.', '_', '-' and '/'."""
    if len(key) > MAX_KEY_LENGTH or ".." in key or not KEY_PATTERN.match(key):
        raise RegistryError(
            f"invalid artifact key {key!r}: expected a relative path of at most "
            f"{MAX_KEY_LENGTH} characters made of segments of letters, digits, '.', '_' or '-' "
            "(no '..', no leading '/', no empty segments)"
        )
    return key


def _open_filesystem(url: str) -> tuple[Any, str]:
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as exc:
        raise RegistryError(
            f"cannot open artifact store {url!r}: {exc}. Expected {EXPECTED_URLS}; "
            "s3:// needs `pip install 'ferry-ml[s3]'`"
        ) from exc
    return fs, str(root).rstrip("/")


def _local_files(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            # A symlink would upload whatever it points at, anywhere on this machine.
            raise RegistryError(
                f"{path.relative_to(directory)} in {directory.name!r} is a symlink; "
                "a bundle must hold regular files only"
            )
        if path.is_file():
            yield path


class ArtifactStore:
    """Directories of files under ``url``, each stored under a validated key."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fs, self._root = _open_filesystem(url)
        self._local = "file" in _protocols(self._fs)
        if self._local:
            Path(self._root).mkdir(parents=True, exist_ok=True)

    def put_dir(self, local: Path, key: str) -> None:
        """Copy every file under ``local`` to ``key``; existing files there are overwritten."""
        if not local.is_dir():
            raise RegistryError(f"cannot upload {str(local)!r}: it is not a directory")
        for path in _local_files(local):
            target = self._path(f"{key}/{path.relative_to(local).as_posix()}")
            self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self._fs.put_file(str(path), target)

    def get_dir(self, key: str, dest: Path) -> Path:
        """Download every file under ``key`` into ``dest`` (created) and return ``dest``."""
        source = self._path(key)
        if not self._fs.isdir(source):
            raise NotFoundError(f"artifact store {self.url} has nothing under key {key!r}")
        for remote in self._fs.find(source):
            target = _inside(dest, check_key(remote[len(source) + 1 :]))
            target.parent.mkdir(parents=True, exist_ok=True)
            self._fs.get_file(remote, str(target))
        return dest

    def exists(self, key: str) -> bool:
        return bool(self._fs.exists(self._path(key)))

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self._fs.exists(path):
            self._fs.rm(path, recursive=True)

    def _path(self, key: str) -> str:
        path = f"{self._root}/{check_key(key)}"
        if self._local:
            # A valid key can still lead out through a symlink inside the root; resolve it.
            _inside(Path(self._root), key)
        return path


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _inside(root: Path, relative: str | Path) -> Path:
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise RegistryError(f"artifact path {str(relative)!r} escapes its root; refusing it")
    return target
