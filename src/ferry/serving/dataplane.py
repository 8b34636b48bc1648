"""The transport-neutral data plane: REST and gRPC both call only this.

Requests and responses are plain dicts in the V2 JSON shape, so each transport only converts
its wire format; validation, batching and errors are decided once, here.

Requests that name no version are routed: a model with a canary sends it the share of traffic
its weight asks for (sticky by routing key), and a model with a shadow runs the same feeds on
it after the answer has gone, off the request path, comparing without ever returning them.
"""

from __future__ import annotations

import asyncio
import logging
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
from ferry.serving.pool import ModelPool, Served
from ferry.serving.routing import (
    CANARY,
    PRIMARY,
    SHADOW,
    disagreements,
    routing_key,
    to_canary,
)

log = logging.getLogger("ferry.serving")

EXTENSIONS = ["model_repository"]


@dataclass(frozen=True)
class Limits:
    max_elements: int = 10_000_000
    max_rows: int = 100_000
    max_shadow_pending: int = 64  # shadow runs waiting at once; beyond it they are skipped


@dataclass
class InferResult:
    """What the monitoring hooks see of a finished request (references, not copies)."""

    model: LoadedModel
    rows: int
    protocol: str
    request_id: str
    feeds: Feeds  # image models: per-image summaries (serving.images.summaries), not pixels
    outputs: dict[str, np.ndarray]
    at: float = field(default_factory=time.time)
    role: str = PRIMARY  # "primary", "canary" (answered from the canary) or "shadow" (not returned)


RequestHook = Callable[[str, str, str, float], None]  # protocol, model, status, seconds
ShadowHook = Callable[[str, int, int, int], None]  # model, shadow version, rows, disagreeing rows
Decode = Callable[[LoadedModel], tuple[Feeds, int]]  # the request's feeds for another model
SHADOW_LOG_EVERY_S = 10.0  # a failing shadow is logged at most this often per model


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
        self.on_shadow: list[ShadowHook] = []
        self.on_shadow_skipped: list[Callable[[str], None]] = []  # model: too many pending
        self.on_shadow_failed: list[Callable[[str, int], None]] = []  # model, shadow version
        self._shadows: set[asyncio.Task[None]] = set()
        self._shadow_logged: dict[str, float] = {}

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.pool.ready() and not self.draining

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "ferry", "version": __version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The V2 metadata of the version asked for, or of the primary; the primary's also
        lists its rollout (canary version and weight, shadow version) under parameters."""
        if version:
            return self.pool.get(name, version).metadata()
        served = self.pool.primary(name)
        meta = served.model.metadata()
        if served.rollout is not None:
            meta["parameters"]["rollout"] = served.rollout.describe()
        return meta

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.pool.get(name, version)
        return True

    def _check_rows(self, rows: int) -> None:
        if rows > self.limits.max_rows:
            raise SignatureError(
                f"request has {rows} rows, more than the limit of {self.limits.max_rows}; split it"
            )

    def _served(self, name: str, version: str | None) -> Served | None:
        """The primary (with its rollout) for requests that name no version, else None."""
        return None if version else self.pool.primary(name)

    async def infer(
        self, name: str, version: str | None, request: Mapping[str, Any], protocol: str = "rest"
    ) -> dict[str, Any]:
        served = self._served(name, version)
        model = self.pool.get(name, version) if served is None else served.model
        if not isinstance(request, Mapping):
            raise SignatureError("request body must be a JSON object with 'inputs'")
        rollout = None if served is None else served.rollout
        role = PRIMARY
        if (
            rollout is not None
            and rollout.canary is not None
            and to_canary(name, routing_key(request, v2=True), rollout.weight)
        ):
            model, role = rollout.canary, CANARY
        if model.images is None:
            feeds, rows = feeds_from_tensors(
                model.signature, request.get("inputs"), self.limits.max_elements
            )
        else:  # decoding and resizing images takes long enough to keep it off the event loop
            feeds, rows = await asyncio.to_thread(
                model.images.from_tensors, request.get("inputs"), self.limits.max_elements
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
        result = InferResult(
            model, rows, protocol, request_id, _seen(model, feeds), outputs, role=role
        )
        self._notify(result)
        if rollout is not None and rollout.shadow is not None:
            limit = self.limits.max_elements

            def decode(shadow: LoadedModel) -> tuple[Feeds, int]:
                if shadow.images is not None:
                    return shadow.images.from_tensors(request.get("inputs"), limit)
                return feeds_from_tensors(shadow.signature, request.get("inputs"), limit)

            self._mirror(rollout.shadow, result, decode)
        return response

    async def predict(
        self, name: str, version: str | None, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        served = self._served(name, version)
        model = self.pool.get(name, version) if served is None else served.model
        if not isinstance(body, Mapping):
            raise SignatureError("request body must be a JSON object with 'instances'")
        rollout = None if served is None else served.rollout
        role = PRIMARY
        if (
            rollout is not None
            and rollout.canary is not None
            and to_canary(name, routing_key(body, v2=False), rollout.weight)
        ):
            model, role = rollout.canary, CANARY
        if model.images is None:
            feeds, rows = feeds_from_records(model.signature, body.get("instances"))
        else:
            feeds, rows = await asyncio.to_thread(model.images.from_records, body.get("instances"))
        self._check_rows(rows)
        outputs = await model.run(feeds, rows)
        request_id = str(body.get("id") or uuid.uuid4().hex)
        result = InferResult(
            model, rows, "records", request_id, _seen(model, feeds), outputs, role=role
        )
        self._notify(result)
        if rollout is not None and rollout.shadow is not None:

            def decode(shadow: LoadedModel) -> tuple[Feeds, int]:
                if shadow.images is not None:
                    return shadow.images.from_records(body.get("instances"))
                return feeds_from_records(shadow.signature, body.get("instances"))

            self._mirror(rollout.shadow, result, decode)
        return {
            "id": request_id,
            "model_name": model.name,
            "model_version": str(model.version),
            "predictions": model.predictions(outputs),
        }

    # ---- shadow ---------------------------------------------------------------------------

    def _mirror(self, shadow: LoadedModel, answered: InferResult, decode: Decode) -> None:
        """Run the answered request on the shadow in a task of its own, if there is room."""
        if len(self._shadows) >= self.limits.max_shadow_pending:
            for skipped in self.on_shadow_skipped:
                skipped(shadow.name)
            return
        task = asyncio.get_running_loop().create_task(self._shadow(shadow, answered, decode))
        # The loop keeps only weak references to tasks: hold this one until it has finished.
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(self, shadow: LoadedModel, answered: InferResult, decode: Decode) -> None:
        feeds, rows = answered.feeds, answered.rows
        try:
            # Another signature, or images (the answer kept only summaries): decode for it.
            if (
                shadow.images is not None
                or shadow.signature.inputs != answered.model.signature.inputs
            ):
                feeds, rows = decode(shadow)
            outputs = await shadow.run(feeds, rows)
            differing = disagreements(answered.model, answered.outputs, shadow, outputs)
        except Exception as exc:  # the client has its answer; a shadow only loses its sample
            self._shadow_failed(shadow, exc)
            return
        result = InferResult(
            shadow,
            rows,
            answered.protocol,
            answered.request_id,
            _seen(shadow, feeds),
            outputs,
            role=SHADOW,
        )
        self._notify(result)
        for hook in self.on_shadow:
            hook(shadow.name, shadow.version, rows, differing)

    def _shadow_failed(self, shadow: LoadedModel, exc: Exception) -> None:
        for hook in self.on_shadow_failed:
            hook(shadow.name, shadow.version)
        now = time.monotonic()
        if now - self._shadow_logged.get(shadow.name, -SHADOW_LOG_EVERY_S) >= SHADOW_LOG_EVERY_S:
            self._shadow_logged[shadow.name] = now
            log.warning("shadow %s:%s failed (not answered with): %s", *_ref(shadow), exc)

    async def settle_shadows(self) -> None:
        """Wait for the shadow runs in progress (tests, and a drain that wants them logged)."""
        while self._shadows:
            await asyncio.gather(*list(self._shadows), return_exceptions=True)

    def cancel_shadows(self) -> None:
        """Stop shadow runs at shut-down: nobody waits for their answers."""
        for task in list(self._shadows):
            task.cancel()

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


def _seen(model: LoadedModel, feeds: Feeds) -> Feeds:
    """What monitoring sees of the inputs: the feeds, or an image model's summaries."""
    return feeds if model.images is None else model.images.monitored(feeds)


def _ref(model: LoadedModel) -> tuple[str, int]:
    return model.name, model.version


def _wanted(outputs: object) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise SignatureError("'outputs' must be a list of objects with a 'name'")
    return [o["name"] for o in outputs]
