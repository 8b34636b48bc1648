"""Import fixtures: a registry and sample frames (helpers live in ``import_support``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from ferry.data.load import load_dataset
from ferry.registry import Registry, open_registry


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = open_registry(f"sqlite:///{tmp_path}/registry.db", str(tmp_path / "artifacts"))
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def cancer() -> pd.DataFrame:
    return load_dataset("builtin:breast_cancer")
