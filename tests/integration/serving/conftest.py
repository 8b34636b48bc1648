"""Serving fixtures: real bundles trained once per session by the lab, and in-process apps.

Each bundle fixture is a ``BundleCase``: the bundle, its manifest, raw rows the model was not
trained on, and helpers that turn those rows into request bodies and into the answer ONNX
Runtime gives when it runs the bundle's graph directly (the reference every route must match).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from ferry.core.bundle import MODEL, BundleManifest, verify_bundle
from ferry.core.signature import InputSpec, strings_with_missing
from ferry.core.spec import parse_spec
from ferry.data.load import load_dataset
from ferry.export.parity import session
from ferry.lab import train
from ferry.registry import Registry, open_registry
from ferry.serving.auth import TokenAuth
from ferry.serving.dataplane import DataPlane, Limits
from ferry.serving.pool import ModelPool, PoolConfig
from ferry.serving.rest import DEFAULT_MAX_BODY, build_app

FAST_SEARCH = {"trials": 1, "time_budget_s": 10, "folds": 2}
SPECS: dict[str, dict[str, Any]] = {
    "fraud": {
        "name": "fraud",
        "task": "classification",
        "data": {"source": "builtin:fraud", "target": "is_fraud", "rows": 3000},
        "search": {"families": ["logistic"], **FAST_SEARCH},
    },
    # Same model name, other data and weighting: its probabilities differ from "fraud".
    "fraud_v2": {
        "name": "fraud",
        "task": "classification",
        "data": {"source": "builtin:fraud", "target": "is_fraud", "rows": 1500},
        "search": {"families": ["logistic"], "class_weight": "none", **FAST_SEARCH},
    },
    "cancer": {
        "name": "cancer",
        "task": "classification",
        "data": {"source": "builtin:breast_cancer", "target": "target"},
        "search": {"families": ["logistic"], **FAST_SEARCH},
    },
    "diabetes": {
        "name": "diabetes",
        "task": "regression",
        "data": {"source": "builtin:diabetes", "target": "target"},
        "search": {"families": ["linear"], "metric": "rmse", **FAST_SEARCH},
    },
}


def _train(tmp_path_factory: pytest.TempPathFactory, key: str) -> Path:
    outcome = train(parse_spec(SPECS[key]), tmp_path_factory.mktemp(f"lab-{key}"))
    return outcome.bundle_dir


def _json_value(spec: InputSpec, value: Any) -> Any:
    """A raw cell as a client would send it in JSON."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if spec.kind == "datetime":
        return pd.Timestamp(value).isoformat()
    if spec.kind == "boolean":
        return bool(value)
    if spec.dtype == "string":
        return str(value)
    return float(value)


@dataclass
class BundleCase:
    """A trained bundle plus unseen raw rows and the reference answers for them."""

    bundle: Path
    manifest: BundleManifest
    frame: pd.DataFrame

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def specs(self) -> list[InputSpec]:
        return self.manifest.signature.inputs

    def rows(self, start: int, count: int) -> pd.DataFrame:
        return self.frame.iloc[start : start + count]

    def records(self, rows: pd.DataFrame) -> list[dict[str, Any]]:
        return [
            {s.name: _json_value(s, row[s.name]) for s in self.specs} for _, row in rows.iterrows()
        ]

    def column(self, spec: InputSpec, rows: pd.DataFrame) -> list[Any]:
        return [_json_value(spec, v) for v in rows[spec.name].tolist()]

    def tensors(self, rows: pd.DataFrame, two_d: bool = False) -> list[dict[str, Any]]:
        """One V2 tensor per input, typed the natural way for each kind."""
        tensors = []
        for spec in self.specs:
            data = self.column(spec, rows)
            datatype = {"string": "BYTES", "float64": "FP64"}.get(spec.dtype, "FP32")
            if spec.kind == "datetime":
                datatype = "BYTES"
            elif spec.kind == "boolean":
                datatype = "BOOL"
            shape = [len(data), 1] if two_d else [len(data)]
            tensors.append({"name": spec.name, "datatype": datatype, "shape": shape, "data": data})
        return tensors

    def matrix(self, rows: pd.DataFrame) -> dict[str, Any]:
        """The single ``[rows, inputs]`` FP32 tensor form (numeric-only bundles)."""
        values = rows[[s.name for s in self.specs]].to_numpy(dtype=np.float64)
        return {
            "name": "input-0",
            "datatype": "FP32",
            "shape": list(values.shape),
            "data": values.tolist(),
        }

    def feeds(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """Graph inputs built the way training builds them, independently of the server."""
        feeds: dict[str, np.ndarray] = {}
        for spec in self.specs:
            column = rows[spec.name]
            if spec.dtype == "string":
                values = strings_with_missing(column.to_numpy())
            elif spec.kind == "datetime":
                stamps = pd.to_datetime(column, utc=True)
                values = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
            else:
                values = pd.to_numeric(column).to_numpy(dtype=np.float64)
            dtype = {"float32": np.float32, "float64": np.float64}.get(spec.dtype, object)
            feeds[spec.name] = np.asarray(values, dtype=dtype).reshape(-1, 1)
        return feeds

    def expected(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """ONNX Runtime on model.onnx, then the manifest's threshold: what serving must say."""
        graph = session((self.bundle / MODEL).read_bytes())
        names = [o.name for o in graph.get_outputs()]
        outputs = dict(zip(names, graph.run(None, self.feeds(rows)), strict=True))
        if self.manifest.task == "regression":
            return {"prediction": outputs[names[0]].reshape(-1)}
        proba = outputs["probabilities"]
        labels = np.asarray(self.manifest.labels, dtype=object)
        if self.manifest.task == "binary" and self.manifest.threshold is not None:
            index = (proba[:, 1] >= self.manifest.threshold).astype(np.int64)
        else:
            index = outputs["label"].reshape(-1)
        return {"label": labels[index], "probabilities": proba}


def _case(bundle: Path, source: str, target: str, rows: int | None) -> BundleCase:
    manifest = verify_bundle(bundle)
    # A different seed from training: rows the model has (mostly) not seen.
    frame = load_dataset(source, rows=rows, seed=11).drop(columns=[target])
    strict = [s.name for s in manifest.signature.inputs if not s.nullable and s.dtype != "string"]
    frame = frame.dropna(subset=strict).reset_index(drop=True)
    return BundleCase(bundle, manifest, frame)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> BundleCase:
    return _case(_train(tmp_path_factory, "fraud"), "builtin:fraud", "is_fraud", 2500)


@pytest.fixture(scope="session")
def fraud_v2(tmp_path_factory: pytest.TempPathFactory, fraud: BundleCase) -> BundleCase:
    """A second "fraud" model with other probabilities, on the same unseen rows."""
    bundle = _train(tmp_path_factory, "fraud_v2")
    return BundleCase(bundle, verify_bundle(bundle), fraud.frame)


@pytest.fixture(scope="session")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> BundleCase:
    return _case(_train(tmp_path_factory, "cancer"), "builtin:breast_cancer", "target", None)


@pytest.fixture(scope="session")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> BundleCase:
    return _case(_train(tmp_path_factory, "diabetes"), "builtin:diabetes", "target", None)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = open_registry(f"sqlite:///{tmp_path}/registry.db", str(tmp_path / "artifacts"))
    yield reg
    reg.close()


@dataclass
class Served:
    """An app being served in-process, with the pieces tests poke at."""

    app: Any
    pool: ModelPool
    plane: DataPlane
    client: httpx.AsyncClient

    async def live(self) -> bool:
        response = await self.client.get("/v2/health/live")
        return response.status_code == 200 and response.json() == {"live": True}


ServeFactory = Callable[..., AbstractAsyncContextManager[Served]]


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory) -> ServeFactory:
    """``async with serve([refs], registry=..., config=..., auth=...) as served:`` runs an app
    through its lifespan (models loaded on start-up, pool closed on shut-down)."""

    @asynccontextmanager
    async def factory(
        refs: list[str],
        registry: Registry | None = None,
        config: PoolConfig | None = None,
        auth: TokenAuth | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        limits: Limits | None = None,
    ) -> AsyncIterator[Served]:
        cache = tmp_path_factory.mktemp("cache")
        pool = ModelPool(registry, cache, config or PoolConfig())
        plane = DataPlane(pool, limits)

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            for ref in refs:
                await pool.add(ref)
            try:
                yield
            finally:
                await pool.close()

        app = build_app(plane, auth, max_body, lifespan=lifespan)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            yield Served(app, pool, plane, client)

    return factory
