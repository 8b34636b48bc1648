"""REST transport: Open Inference Protocol V2 routes plus the row-records predict route.

It converts HTTP to dicts and back and calls only the data plane. Bodies are read with a
hard size limit (declared or chunked), parsed with orjson, and every error is
``{"error": "..."}`` with the status from ``HTTP_STATUS``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferry.errors import ErrorCode, FerryError
from ferry.serving.auth import TokenAuth
from ferry.serving.dataplane import DataPlane
from ferry.serving.openapi import openapi_document

log = logging.getLogger("ferry.serving.rest")

HTTP_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.FAILED_PRECONDITION: 400,
    ErrorCode.RESOURCE_EXHAUSTED: 413,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}
DEFAULT_MAX_BODY = 64 * 1024 * 1024
JSON = "application/json"


class BodyTooLarge(FerryError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class BadContentType(FerryError):
    code = ErrorCode.INVALID_ARGUMENT


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status,
        headers=headers,
        media_type=JSON,
    )


def error_response(exc: FerryError) -> Response:
    status = HTTP_STATUS.get(exc.code, 500)
    if isinstance(exc, BadContentType):
        status = 415
    headers = {}
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return json_response({"error": exc.message}, status, headers)


class RestApp:
    def __init__(
        self, plane: DataPlane, auth: TokenAuth | None = None, max_body: int = DEFAULT_MAX_BODY
    ) -> None:
        self.plane, self.auth, self.max_body = plane, auth or TokenAuth(), max_body

    async def body(self, request: Request) -> Any:
        kind = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
        # curl -d sends form-urlencoded by default; the body is still JSON, so accept it.
        if kind not in (JSON, "", "text/plain", "application/x-www-form-urlencoded", "*/*"):
            raise BadContentType(f"content type {kind!r} is not supported; send {JSON}")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise BodyTooLarge(f"body of {declared} bytes exceeds the {self.max_body}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge(f"body exceeds the {self.max_body}-byte limit")
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise FerryError(
                f"body is not valid JSON: {exc.msg} at position {exc.pos}",
                code=ErrorCode.INVALID_ARGUMENT,
            ) from None

    def guarded(
        self, handler: Callable[[Request], Awaitable[Response]], scope: str = "predict"
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                self.auth.check(request.headers.get("authorization"), scope)
                return await handler(request)
            except FerryError as exc:
                return error_response(exc)
            except Exception:  # never leak internals: log here, answer generically
                log.exception("unhandled error on %s", request.url.path)
                return json_response({"error": "internal error"}, 500)

        return endpoint

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.plane.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return json_response(self.plane.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        params = request.path_params
        return json_response(self.plane.model_metadata(params["model"], params.get("version")))

    async def model_ready(self, request: Request) -> Response:
        params = request.path_params
        ready = self.plane.model_ready(params["model"], params.get("version"))
        return json_response({"name": params["model"], "ready": ready}, 200 if ready else 503)

    async def infer(self, request: Request) -> Response:
        params = request.path_params
        body = await self.body(request)
        return json_response(await self.plane.infer(params["model"], params.get("version"), body))

    async def predict(self, request: Request) -> Response:
        params = request.path_params
        body = await self.body(request)
        return json_response(await self.plane.predict(params["model"], params.get("version"), body))

    async def repository_index(self, request: Request) -> Response:
        return json_response(self.plane.repository_index())

    async def load(self, request: Request) -> Response:
        await self.plane.load(request.path_params["model"])
        return json_response({})

    async def unload(self, request: Request) -> Response:
        await self.plane.unload(request.path_params["model"])
        return json_response({})

    async def metrics(self, request: Request) -> Response:
        # In a thread: a large scrape takes tens of milliseconds that requests should not wait.
        text, content_type = await asyncio.to_thread(self.plane.scrape)
        return Response(text, 200, media_type=content_type)

    async def feedback(self, request: Request) -> Response:
        body = await self.body(request)
        return json_response(self.plane.feedback(request.path_params["model"], body))

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(admin=self.auth.admin_enabled))

    def routes(self) -> list[Route]:
        g = self.guarded
        routes = [
            Route("/v2/health/live", g(self.live, "public"), methods=["GET"]),
            Route("/v2/health/ready", g(self.ready, "public"), methods=["GET"]),
            Route("/v2", g(self.server_metadata), methods=["GET"]),
            Route("/openapi.json", g(self.openapi, "public"), methods=["GET"]),
            Route("/metrics", g(self.metrics, "public"), methods=["GET"]),
            Route("/v2/models/{model}/feedback", g(self.feedback), methods=["POST"]),
        ]
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes += [
                Route(prefix, g(self.model_metadata), methods=["GET"]),
                Route(f"{prefix}/ready", g(self.model_ready), methods=["GET"]),
                Route(f"{prefix}/infer", g(self.infer), methods=["POST"]),
            ]
        for prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
            routes.append(Route(prefix + ":predict", g(self.predict), methods=["POST"]))
        if self.auth.admin_enabled:
            routes += [
                Route("/v2/repository/index", g(self.repository_index, "admin"), methods=["POST"]),
                Route(
                    "/v2/repository/models/{model}/load", g(self.load, "admin"), methods=["POST"]
                ),
                Route(
                    "/v2/repository/models/{model}/unload",
                    g(self.unload, "admin"),
                    methods=["POST"],
                ),
            ]
        return routes


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    messages = {
        404: f"no route for {request.method} {request.url.path}",
        405: f"method {request.method} is not allowed on {request.url.path}",
    }
    # Keep Starlette's headers: a 405 must say what is allowed (``Allow``).
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
    return json_response({"error": messages.get(status, "request failed")}, status, headers)


def build_app(
    plane: DataPlane,
    auth: TokenAuth | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    lifespan: Any = None,
) -> Starlette:
    rest = RestApp(plane, auth, max_body)
    return Starlette(
        routes=rest.routes(),
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
        middleware=[Middleware(RequestMetrics, plane=plane)],
    )


class RequestMetrics:
    """Times every model request and reports its status to the data plane's request hooks."""

    def __init__(self, app: Any, plane: DataPlane) -> None:
        self.app, self.plane = app, plane

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        model = _model_of(scope.get("path", "")) if scope["type"] == "http" else None
        if model is None or not self.plane.on_request:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = ["500"]
        self.plane.observe_in_flight(model, 1)

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.plane.observe_in_flight(model, -1)
            self.plane.observe_request("rest", model, status[0], time.perf_counter() - started)


def _model_of(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) > 3 and parts[1] in ("v1", "v2") and parts[2] == "models":
        return parts[3].split(":")[0]
    return None
