"""Bearer tokens: predict scope on the data plane, admin scope on the repository routes, which
exist only when an admin token is configured; health stays open."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ferry.serving.auth import TokenAuth

pytestmark = pytest.mark.anyio

ADMIN_ROUTES = [
    "/v2/repository/index",
    "/v2/repository/models/fraud/load",
    "/v2/repository/models/fraud/unload",
]
PREDICT, ADMIN = {"authorization": "Bearer p"}, {"authorization": "Bearer a"}


@pytest.fixture(scope="module")
async def guarded(serve, fraud) -> AsyncIterator[Any]:
    auth = TokenAuth(predict_tokens=("p",), admin_tokens=("a",))
    async with serve([str(fraud.bundle)], auth=auth) as served:
        yield served


@pytest.fixture(scope="module")
async def open_server(serve, fraud) -> AsyncIterator[Any]:
    async with serve([str(fraud.bundle)]) as served:
        yield served


def error_of(response) -> str:
    body = response.json()
    assert list(body) == ["error"]
    return str(body["error"])


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "p"}, 401),  # not a bearer header
        ({"authorization": "Basic cDpw"}, 401),
        ({"authorization": "Bearer nope"}, 403),
        ({"authorization": "Bearer "}, 403),
        ({"authorization": "Bearer pp"}, 403),
        (PREDICT, 200),
        ({"authorization": "bearer p"}, 200),  # the scheme is case-insensitive
        (ADMIN, 200),  # admin may predict too
    ],
)
async def test_infer_needs_predict_token(guarded, fraud, headers, status: int) -> None:
    body = {"inputs": fraud.tensors(fraud.rows(0, 2))}
    response = await guarded.client.post("/v2/models/fraud/infer", json=body, headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert "Bearer" in error_of(response)
    if status == 403:
        assert "predict" in error_of(response) and "nope" not in error_of(response)


@pytest.mark.parametrize(
    "path", ["/v2", "/v2/models/fraud", "/v2/models/fraud/ready", "/v1/models/fraud:predict"]
)
async def test_data_plane_routes_are_guarded(guarded, path: str) -> None:
    method = "POST" if path.endswith(":predict") else "GET"
    response = await guarded.client.request(method, path)
    assert response.status_code == 401
    error_of(response)


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/openapi.json"])
async def test_health_is_open(guarded, path: str) -> None:
    response = await guarded.client.get(path)
    assert response.status_code == 200


@pytest.mark.parametrize("path", ADMIN_ROUTES)
async def test_admin_routes_absent_without_admin_token(open_server, path: str) -> None:
    response = await open_server.client.post(path, headers=ADMIN)
    assert response.status_code == 404
    assert "no route" in error_of(response)
    assert (
        "/v2/repository/index"
        not in (await open_server.client.get("/openapi.json")).json()["paths"]
    )


@pytest.mark.parametrize("path", ADMIN_ROUTES)
@pytest.mark.parametrize(("headers", "status"), [({}, 401), (PREDICT, 403)])
async def test_admin_routes_need_admin_token(guarded, path: str, headers, status: int) -> None:
    response = await guarded.client.post(path, headers=headers)
    assert response.status_code == status
    assert "admin" in error_of(response) or status == 401
    assert guarded.pool.get("fraud") is not None, "a refused unload must not unload"


async def test_admin_index_unload_and_load(serve, fraud) -> None:
    auth = TokenAuth(admin_tokens=("a",))
    async with serve([str(fraud.bundle)], auth=auth) as served:
        index = await served.client.post("/v2/repository/index", headers=ADMIN)
        assert index.status_code == 200
        assert index.json() == [{"name": "fraud", "version": "1", "state": "READY", "reason": ""}]
        # predict needs no token when only admin tokens are configured
        body = {"inputs": fraud.tensors(fraud.rows(0, 1))}
        assert (await served.client.post("/v2/models/fraud/infer", json=body)).status_code == 200
        unload = await served.client.post("/v2/repository/models/fraud/unload", headers=ADMIN)
        assert unload.status_code == 200
        gone = await served.client.post("/v2/models/fraud/infer", json=body)
        assert gone.status_code == 404
        again = await served.client.post("/v2/repository/models/fraud/unload", headers=ADMIN)
        assert again.status_code == 404 and "fraud" in error_of(again)
        # no registry here: loading by name cannot resolve, and says so
        load = await served.client.post("/v2/repository/models/fraud/load", headers=ADMIN)
        assert load.status_code == 404 and "registry" in error_of(load)
        assert await served.live()


async def test_admin_load_never_reads_a_local_path(
    serve, fraud, cancer, tmp_path, monkeypatch
) -> None:
    """A name in the URL is a registry ref, never a directory (peers' path-traversal CVEs)."""
    shutil.copytree(cancer.bundle, tmp_path / "cancer")
    monkeypatch.chdir(tmp_path)
    auth = TokenAuth(admin_tokens=("a",))
    async with serve([str(fraud.bundle)], auth=auth) as served:
        for name in ("cancer", "%2E%2E", "%2E"):
            response = await served.client.post(f"/v2/repository/models/{name}/load", headers=ADMIN)
            assert response.status_code in (400, 404), response.text
            assert "bundle" not in error_of(response) and "manifest" not in error_of(response)
        assert sorted(served.pool.served) == ["fraud"]
