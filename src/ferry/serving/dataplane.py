"""The transport-neutral data plane: REST and gRPC both call only this.

Requests and responses are plain dicts in the V2 JSON shape, so each transport only converts
its wire format; validation, batching and errors are decided once, here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferry import __version__
from ferry.errors import ErrorCode, FerryError, SignatureError
from ferry.serving.inputs import Feeds, feeds_from_records, feeds_from_tensors
from ferry.serving.model import LoadedModel
from ferry.serving.pool import ModelPool

EXTENSIONS = ["model_repository"]


@dataclass(frozen=True)
class Limits:
    max_elements: int = 10_000_000
    max_rows: int = 100_000


@dataclass
class InferResult:
    """What the monitoring hooks see of a finished request (references, not copies)."""

    model: LoadedModel
    rows: int
    protocol: str
    request_id: str
    feeds: Feeds
    outputs: dict[str, np.ndarray]
    at: float = field(default_factory=time.time)


RequestHook = Callable[[str, str, str, float], None]  # protocol, model, status, seconds


class DataPlane:
    def __init__(self, pool: ModelPool, limits: Limits | None = None) -> None:
        self.pool = pool
        self.limits = limits or Limits()
        self.draining = False
        self.on_infer: list[Callable[[InferResult], None]] = []
        self.on_request: list[RequestHook] = []
        self.on_in_flight: list[Callable[[str, int], None]] = []  # model, +1 / -1
        # Monitoring plugs these in at the entry point; serving does not import monitoring.
        self.feedback_handler: Callable[[str, list[dict[str, Any]]], dict[str, int]] | None = None
        self.scraper: Callable[[], tuple[bytes, str]] | None = None

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
        request_id = str(request.get("id") or uuid.uuid4().hex)
        self._notify(InferResult(model, rows, protocol, request_id, feeds, outputs))
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
        request_id = str(body.get("id") or uuid.uuid4().hex)
        self._notify(InferResult(model, rows, "records", request_id, feeds, outputs))
        return {
            "id": request_id,
            "model_name": model.name,
            "model_version": str(model.version),
            "predictions": model.predictions(outputs),
        }

    def _notify(self, result: InferResult) -> None:
        for hook in self.on_infer:
            hook(result)

    def observe_in_flight(self, model: str, change: int) -> None:
        for hook in self.on_in_flight:
            hook(model, change)

    def observe_request(self, protocol: str, model: str, status: str, seconds: float) -> None:
        for hook in self.on_request:
            hook(protocol, model, status, seconds)

    def feedback(self, name: str, body: object) -> dict[str, int]:
        """Late labels: ``[{"id": ..., "label": ...}]``; unknown ids are counted, not errors."""
        self.pool.get(name)
        items = body.get("labels") if isinstance(body, Mapping) else body
        if not isinstance(items, list) or not all(
            isinstance(i, Mapping) and "id" in i and "label" in i for i in items
        ):
            raise SignatureError('feedback must be a list of {"id": ..., "label": ...} objects')
        if self.feedback_handler is None:
            raise FerryError(
                "monitoring is off on this server, so labels cannot be joined",
                code=ErrorCode.FAILED_PRECONDITION,
            )
        return self.feedback_handler(name, [dict(i) for i in items])

    def scrape(self) -> tuple[bytes, str]:
        if self.scraper is None:
            raise FerryError("metrics are off on this server", code=ErrorCode.NOT_FOUND)
        return self.scraper()

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
