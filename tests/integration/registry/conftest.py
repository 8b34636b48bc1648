"""Registry fixtures: every test runs on SQLite and on PostgreSQL, each in a fresh database.

PostgreSQL is at FERRY_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
each test gets its own schema, dropped afterwards. When the server does not answer, the
PostgreSQL cases are skipped locally but fail under CI, where they must run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from ferry.core.bundle import BundleManifest, Lineage, Metrics, write_bundle
from ferry.core.signature import InputSpec, OutputSpec, Signature
from ferry.registry import Registry, open_registry

POSTGRES_URL = os.environ.get(
    "FERRY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BundleFactory = Callable[..., Path]


def _libpq_url(url: str) -> str:
    """psycopg itself wants a libpq URI, without SQLAlchemy's '+driver'."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+')[0]}://{rest}"


def with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture(scope="session")
def postgres_server() -> str:
    try:
        with psycopg.connect(_libpq_url(POSTGRES_URL), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        where = urlsplit(POSTGRES_URL).hostname
        message = f"PostgreSQL at {where} (FERRY_TEST_POSTGRES_URL) did not answer: {exc}"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{message}; CI is set, so the PostgreSQL tests must run")
        pytest.skip(f"{message}; start it or set FERRY_TEST_POSTGRES_URL to run these cases")
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    schema = f"ferry_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_url(postgres_server), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield with_search_path(postgres_server, schema)
    with psycopg.connect(_libpq_url(postgres_server), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def artifacts_dir(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def registry(registry_url: str, artifacts_dir: Path) -> Iterator[Registry]:
    with open_registry(registry_url, str(artifacts_dir)) as opened:
        yield opened


@pytest.fixture
def make_bundle(tmp_path: Path) -> BundleFactory:
    """Write a tiny valid bundle (the registry never runs the model) and return its dir."""

    def make(
        name: str = "fraud",
        *,
        model: bytes = b"fake-onnx-bytes",
        test_metrics: dict[str, float] | None = None,
        lineage: Lineage | None = None,
    ) -> Path:
        directory = tmp_path / "bundles" / uuid.uuid4().hex[:8] / name
        manifest = BundleManifest(
            name=name,
            task="binary",
            signature=Signature(
                inputs=[InputSpec(name="x", dtype="float32")],
                outputs=[OutputSpec(name="label", dtype="int64", shape=[-1])],
            ),
            metrics=Metrics(test=test_metrics or {}),
            lineage=lineage or Lineage(),
        )
        write_bundle(directory, manifest, model)
        return directory

    return make
