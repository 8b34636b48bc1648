"""The transport-neutral data plane: REST and gRPC both call only this.

Requests and responses are plain dicts in the V2 JSON shape, so each transport only converts
its wire format; validation, batching and errors are decided once, here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry import __version__
from ferry.errors import SignatureError
from ferry.serving.inputs import feeds_from_records, feeds_from_tensors
from ferry.serving.pool import ModelPool

EXTENSIONS = ["model_repository"]


@dataclass(frozen=True)
class Limits:
    max_elements: int = 10_000_000
    max_rows: int = 100_000


@dataclass
class InferResult:
    """What the monitoring hooks see of a finished request."""

    model: str
    version: int
    rows: int
    protocol: str


class DataPlane:
    def __init__(self, pool: ModelPool, limits: Limits | None = None) -> None:
        self.pool = pool
        self.limits = limits or Limits()
        self.draining = False
        self.on_infer: list[Callable[[InferResult], None]] = []

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.pool.ready() and not self.draining

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "ferry", "version": __version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.pool.get(name, version).metadata()

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.pool.get(name, version)
        return True

    def _check_rows(self, rows: int) -> None:
        if rows > self.limits.max_rows:
            raise SignatureError(
                f"request has {rows} rows, more than the limit of {self.limits.max_rows}; split it"
            )

    async def infer(
        self, name: str, version: str | None, request: Mapping[str, Any], protocol: str = "rest"
    ) -> dict[str, Any]:
        model = self.pool.get(name, version)
        if not isinstance(request, Mapping):
            raise SignatureError("request body must be a JSON object with 'inputs'")
        feeds, rows = feeds_from_tensors(
            model.signature, request.get("inputs"), self.limits.max_elements
        )
        self._check_rows(rows)
        outputs = await model.run(feeds, rows)
        response: dict[str, Any] = {
            "model_name": model.name,
            "model_version": str(model.version),
            "outputs": model.v2_outputs(outputs, _wanted(request.get("outputs"))),
        }
        if "id" in request:
            response["id"] = request["id"]
        if request.get("parameters"):
            response["parameters"] = request["parameters"]
        self._notify(InferResult(model.name, model.version, rows, protocol))
        return response

    async def predict(
        self, name: str, version: str | None, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        model = self.pool.get(name, version)
        if not isinstance(body, Mapping):
            raise SignatureError("request body must be a JSON object with 'instances'")
        feeds, rows = feeds_from_records(model.signature, body.get("instances"))
        self._check_rows(rows)
        outputs = await model.run(feeds, rows)
        self._notify(InferResult(model.name, model.version, rows, "records"))
        return {
            "model_name": model.name,
            "model_version": str(model.version),
            "predictions": model.predictions(outputs),
        }

    def _notify(self, result: InferResult) -> None:
        for hook in self.on_infer:
            hook(result)

    def repository_index(self) -> list[dict[str, Any]]:
        return [
            {"name": n, "version": str(s.model.version), "state": "READY", "reason": ""}
            for n, s in sorted(self.pool.served.items())
        ]

    async def load(self, name: str) -> None:
        await self.pool.add_ref(name)

    async def unload(self, name: str) -> None:
        await self.pool.unload(name)


def _wanted(outputs: object) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise SignatureError("'outputs' must be a list of objects with a 'name'")
    return [o["name"] for o in outputs]
