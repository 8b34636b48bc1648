"""Helpers for the import tests: pickling with a hash, JSON rows, an in-process server.

Test modules import this file by path (``sys.path``), like ``serving``'s support modules.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from ferry.registry import Registry
from ferry.serving.dataplane import DataPlane
from ferry.serving.pool import ModelPool, PoolConfig
from ferry.serving.rest import build_app


def pickled(obj: Any, path: Path) -> str:
    """Pickle ``obj`` to ``path``; its sha256, as a user would get it from sha256sum."""
    path.write_bytes(pickle.dumps(obj))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them in JSON: NaN as null, numpy scalars as Python ones."""
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


@dataclass
class Served:
    client: httpx.AsyncClient
    plane: DataPlane


@asynccontextmanager
async def served(registry: Registry, ref: str, cache: Path) -> AsyncIterator[Served]:
    """The REST app serving ``ref`` from ``registry``, run through its lifespan."""
    pool = ModelPool(registry, cache, PoolConfig())
    plane = DataPlane(pool)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await pool.add(ref)
        try:
            yield
        finally:
            await pool.close()

    app = build_app(plane, lifespan=lifespan)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield Served(client, plane)


async def predict(client: httpx.AsyncClient, name: str, rows: list[dict[str, Any]]) -> list[Any]:
    response = await client.post(f"/v1/models/{name}:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


def torch_or_skip() -> Any:
    """torch, or a skip on a developer's machine without it (CI installs it: there, a failure)."""
    try:
        import torch
    except ImportError:
        reason = "torch is not installed (pip install torch==2.13.0)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{reason}; CI is set, so the torch import tests must run")
        pytest.skip(reason)
    return torch
