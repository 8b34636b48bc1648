"""Building the registry from its two settings, and the errors that name them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.errors import RegistryError
from ferry.registry import Registry, open_registry


def test_local_defaults_create_their_directories(tmp_path: Path) -> None:
    db = tmp_path / "home" / "registry.db"
    with open_registry(f"sqlite:///{db}", str(tmp_path / "home" / "artifacts")) as registry:
        assert isinstance(registry, Registry)
        assert registry.list_models() == []
    assert db.is_file() and (tmp_path / "home" / "artifacts").is_dir()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://user@host/db", "unsupported registry database 'mysql'"),
        ("definitely not a url", "invalid registry database URL"),
    ],
)
def test_a_bad_registry_url_names_the_setting(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(RegistryError, match=f"FERRY_REGISTRY_URL is not usable: {message}") as err:
        open_registry(url, str(tmp_path / "artifacts"))
    assert "postgresql://" in str(err.value)  # says what is expected


def test_a_bad_artifacts_url_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="FERRY_ARTIFACTS_URL is not usable"):
        open_registry(f"sqlite:///{tmp_path / 'r.db'}", "nope://bucket")
