"""The served OpenAPI document matches the app's routes, and fuzzing every operation it lists
(schemathesis, in-process over ASGI) never gets a 5xx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from starlette.routing import Route

from ferry.serving.auth import TokenAuth
from ferry.serving.dataplane import DataPlane
from ferry.serving.openapi import openapi_document
from ferry.serving.pool import ModelPool, PoolConfig
from ferry.serving.rest import build_app

ADMIN = {"authorization": "Bearer a"}


def _app(cache: Path, auth: TokenAuth, bundles: list[Path]) -> Any:
    pool = ModelPool(None, cache, PoolConfig())

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        for bundle in bundles:
            await pool.add(str(bundle))
        try:
            yield
        finally:
            await pool.close()

    return build_app(DataPlane(pool), auth, lifespan=lifespan)


def _operations(app: Any) -> set[tuple[str, str]]:
    return {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ()) - {"HEAD"}
    }


@pytest.mark.parametrize(
    "auth", [TokenAuth(), TokenAuth(admin_tokens=("a",))], ids=["plain", "admin"]
)
@pytest.mark.anyio
async def test_openapi_lists_every_route(tmp_path: Path, auth: TokenAuth) -> None:
    app = _app(tmp_path, auth, [])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    documented = {(path, m) for path, item in document["paths"].items() for m in item}
    assert documented == _operations(app)
    assert ("/v2/repository/index" in document["paths"]) is auth.admin_enabled
    for path, item in document["paths"].items():
        for operation in item.values():
            params = {p["name"] for p in operation["parameters"]}
            assert params == {seg[1:-1] for seg in path.replace(":", "/").split("/") if "{" in seg}
            assert "200" in operation["responses"]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory, fraud, cancer) -> Iterator[Any]:
    cache = tmp_path_factory.mktemp("fuzz-cache")
    app = _app(cache, TokenAuth(admin_tokens=("a",)), [fraud.bundle, cancer.bundle])
    yield schemathesis.openapi.from_asgi("/openapi.json", app)


# Listed from the document itself: schemathesis's lazy pytest loader does not run on pytest 9,
# so each operation is a parametrized test driving a Hypothesis strategy directly. Negative
# cases exist only where there is a body to break (any string is a valid path parameter).
CASES = [
    (path, method, mode)
    for path, item in openapi_document(admin=True)["paths"].items()
    for method, operation in item.items()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or "requestBody" in operation
]
IDS = [f"{m} {p} {mode}" for p, m, mode in CASES]


def fuzz(api_schema: Any, path: str, method: str, mode: GenerationMode, examples: int) -> None:
    operation = api_schema[path][method.upper()]

    # Random model names only ever reach the 404; most cases name a served model instead.
    real = "{model}" in path and "/repository/" not in path
    models = st.sampled_from(["fraud", "cancer", None] if real else [None])

    @given(case=operation.as_strategy(generation_mode=mode), model=models)
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any, model: str | None) -> None:
        if model is not None:
            case.path_parameters["model"] = model
            if "version" in case.path_parameters:
                case.path_parameters["version"] = "1"
        response = case.call(headers=ADMIN)
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code >= 400:
            body = response.json()
            assert list(body) == ["error"] and isinstance(body["error"], str)

    check()


@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=IDS)
def test_fuzzed_requests_never_get_a_server_error(
    api_schema: Any, path: str, method: str, mode: GenerationMode
) -> None:
    fuzz(api_schema, path, method, mode, examples=10)


@pytest.mark.slow
@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=IDS)
def test_fuzzed_requests_never_get_a_server_error_long(
    api_schema: Any, path: str, method: str, mode: GenerationMode
) -> None:
    fuzz(api_schema, path, method, mode, examples=100)
