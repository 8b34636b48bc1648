"""The models a server holds, and hot swap when a registry alias moves.

A new version is fetched, verified, loaded and warmed in a thread while the old one keeps
serving; the swap is one dict assignment on the event loop; the old version is closed once
its in-flight requests have finished. A version that fails to load leaves the old one serving.

A model served by alias (``fraud@production``) also follows the same model's ``canary`` alias
(which takes the share of traffic its weight asks for) and ``shadow`` alias (which sees a copy
of the traffic and never answers): each poll reads all of a model's aliases in one query, and
canary and shadow versions are loaded, swapped and retired exactly as the primary is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ferry.core.bundle import read_manifest
from ferry.core.refs import ModelRef, parse_ref
from ferry.errors import ErrorCode, FerryError
from ferry.registry.records import AliasTarget
from ferry.registry.service import Registry
from ferry.serving.batching import BatchConfig
from ferry.serving.model import LoadedModel
from ferry.serving.routing import CANARY, CANARY_ALIAS, SHADOW, SHADOW_ALIAS, Rollout

log = logging.getLogger("ferry.serving")


class ModelNotFound(FerryError):
    code = ErrorCode.NOT_FOUND


class ModelsLoading(FerryError):
    """Asked for a model while the server is still loading its models: retry, do not give up."""

    code = ErrorCode.UNAVAILABLE
    retry_after_s = 1


@dataclass
class PoolConfig:
    batch: BatchConfig = field(default_factory=BatchConfig)
    per_model_batch: dict[str, BatchConfig] = field(default_factory=dict)
    intra_threads: int = 1
    poll_interval_s: float = 5.0
    drain_timeout_s: float = 30.0


@dataclass
class Served:
    """A ref the server was asked to serve and the version it currently resolves to, plus its
    canary and shadow when it is an alias ref whose model has them (None: requests need no
    routing decision at all)."""

    ref: ModelRef
    model: LoadedModel
    rollout: Rollout | None = None


NO_ROLLOUT = Rollout()
RolloutHook = Callable[[str, Rollout, Rollout], None]  # model name, before, after


@dataclass
class LoadEvent:
    name: str
    version: int | None
    ok: bool
    detail: str
    at: float = field(default_factory=time.time)


class ModelPool:
    def __init__(self, registry: Registry | None, cache_dir: Path, config: PoolConfig) -> None:
        self.registry, self.cache_dir, self.config = registry, cache_dir, config
        self.served: dict[str, Served] = {}  # by model name: the default version for the name
        self.loaded: dict[tuple[str, int], LoadedModel] = {}
        self.history: list[LoadEvent] = []
        self.listeners: list = []  # type: ignore[type-arg]
        self._retiring: set[asyncio.Task[None]] = set()
        self.starting = False  # the server sets it while its first models load
        # Monitoring attaches its per-model observers (batch sizes) through this.
        self.on_model_loaded: list[Callable[[LoadedModel], None]] = []
        self.on_rollout: list[RolloutHook] = []  # a canary or shadow appeared, moved or left

    def _batch_config(self, name: str) -> BatchConfig:
        return self.config.per_model_batch.get(name, self.config.batch)

    def _load_blocking(self, bundle_dir: Path, name: str, version: int) -> LoadedModel:
        model = LoadedModel(
            bundle_dir, version, self._batch_config(name), self.config.intra_threads
        )
        model.warm_up()
        feeds = {s.name: v for s, v in zip(model.signature.inputs, _one_row(model), strict=True)}
        model.batcher.calibrate(feeds)
        return model

    def _fetch_blocking(self, ref: ModelRef) -> tuple[Path, int]:
        if self.registry is None:
            raise ModelNotFound(f"cannot resolve {ref}: no registry is configured")
        version = self.registry.resolve(ref)
        return self.registry.fetch(
            f"{version.name}:{version.version}", self.cache_dir
        ), version.version

    async def _load(self, ref: ModelRef) -> LoadedModel:
        path, version = await asyncio.to_thread(self._fetch_blocking, ref)
        key = (ref.name, version)
        if key in self.loaded:
            return self.loaded[key]
        model = await asyncio.to_thread(self._load_blocking, path, ref.name, version)
        await model.start()
        self.loaded[key] = model
        self._loaded_hooks(model)
        self._record(LoadEvent(ref.name, version, True, f"loaded {ref.name}:{version}"))
        return model

    def _loaded_hooks(self, model: LoadedModel) -> None:
        for hook in self.on_model_loaded:
            hook(model)

    async def add(self, text: str) -> LoadedModel:
        """Serve a ref (``name``, ``name:3``, ``name@alias``) or a local bundle directory."""
        path = Path(text)
        if path.is_dir():
            return await self.add_bundle(path)
        return await self.add_ref(text)

    async def add_ref(self, text: str) -> LoadedModel:
        """Serve a registry ref only: what remote callers (the admin API) may ask for, since a
        name from a URL must never be read as a directory on the server."""
        ref = parse_ref(text)
        model = await self._load(ref)
        served = self.served.setdefault(ref.name, Served(ref, model))
        if served.ref.alias is not None and served.model is model:
            # Canary and shadow from the start, so that every replica splits alike.
            await self._refresh_routes(ref.name, served)
        return model

    async def add_bundle(self, path: Path, version: int = 1) -> LoadedModel:
        # The name comes from the manifest, so per-model batch settings apply here too.
        name = (await asyncio.to_thread(read_manifest, path)).name
        model = await asyncio.to_thread(self._load_blocking, path, name, version)
        await model.start()
        self.loaded[(model.name, version)] = model
        self.served.setdefault(model.name, Served(ModelRef(model.name, version=version), model))
        self._loaded_hooks(model)
        self._record(LoadEvent(model.name, version, True, f"loaded bundle {path.name}"))
        return model

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        if version:
            model = self.loaded.get((name, _version_number(name, version)))
            if model is None:
                versions = sorted(v for n, v in self.loaded if n == name)
                raise ModelNotFound(
                    f"model {name!r} version {version} is not loaded; loaded "
                    f"versions: {versions or 'none'}"
                )
            return model
        return self.primary(name).model

    def primary(self, name: str) -> Served:
        """What answers requests that name no version: the served ref and its rollout."""
        served = self.served.get(name)
        if served is not None:
            return served
        if self.starting:
            raise ModelsLoading("the server is still loading its models; retry shortly")
        raise ModelNotFound(
            f"model {name!r} is not served here; served models: {sorted(self.served) or 'none'}"
        )

    def ready(self) -> bool:
        return bool(self.served) and not self.starting

    def fail_pending(self, error: Exception) -> int:
        """Fail every request still queued for a batch (at the end of the grace period)."""
        return sum(model.batcher.fail_all(error) for model in self.loaded.values())

    async def poll_once(self) -> list[LoadEvent]:
        """Resolve every served ref again and swap the ones whose version moved; alias refs
        also follow their model's canary and shadow (one registry query per model)."""
        events: list[LoadEvent] = []
        for name, served in list(self.served.items()):
            if self.registry is None or served.ref.version is not None:
                continue
            if served.ref.alias is None:
                events += await self._refresh_latest(name, served)
            else:
                events += await self._refresh_routes(name, served)
        return events

    async def _refresh_latest(self, name: str, served: Served) -> list[LoadEvent]:
        try:
            current = await asyncio.to_thread(self.registry.resolve, served.ref)  # type: ignore[union-attr]
        except FerryError as exc:
            return [self._unresolved(name, served, str(exc))]
        if current.version == served.model.version:
            return []
        return [await self._swap(name, served, current.version)]

    async def _refresh_routes(self, name: str, served: Served) -> list[LoadEvent]:
        try:
            routes = await asyncio.to_thread(self.registry.routes, name)  # type: ignore[union-attr]
        except FerryError as exc:
            return [self._unresolved(name, served, str(exc))]
        events: list[LoadEvent] = []
        primary = routes.get(str(served.ref.alias))
        if primary is None:
            known = ", ".join(f"{a} -> {t.version}" for a, t in routes.items()) or "none"
            why = f"model {name!r} has no alias {served.ref.alias!r} (its aliases: {known})"
            events.append(self._unresolved(name, served, why))
        elif primary.version != served.model.version:
            events.append(await self._swap(name, served, primary.version))
        for role, alias in ((CANARY, CANARY_ALIAS), (SHADOW, SHADOW_ALIAS)):
            target = None if served.ref.alias == alias else routes.get(alias)
            if role == CANARY and target is not None and target.weight is None:
                target = None  # a canary without a weight asks for no traffic
            event = await self._follow(name, role, target)
            if event is not None:
                events.append(event)
        return events

    def _unresolved(self, name: str, served: Served, why: str) -> LoadEvent:
        detail = f"cannot resolve {served.ref}: {why}; still serving {served.model.version}"
        return self._record(LoadEvent(name, None, False, detail))

    async def _swap(self, name: str, served: Served, version: int) -> LoadEvent:
        try:
            new = await self._obtain(name, version)
        except Exception as exc:  # any load failure keeps the old version serving
            return self._record(
                LoadEvent(
                    name,
                    version,
                    False,
                    f"{name}:{version} failed to load, still serving {served.model.version}: {exc}",
                )
            )
        old = served.model
        current = self.served.get(name, served)
        self.served[name] = Served(served.ref, new, current.rollout)
        self._retire_later(old)
        return self._record(
            LoadEvent(name, new.version, True, f"{served.ref} moved {old.version} -> {new.version}")
        )

    async def _follow(self, name: str, role: str, target: AliasTarget | None) -> LoadEvent | None:
        """Bring the served model's canary or shadow to ``target`` (None: there is none)."""
        served = self.served.get(name)
        if served is None:
            return None
        current = _role_model(served.rollout or NO_ROLLOUT, role)
        model = current
        if target is None:
            model = None
        elif current is None or current.version != target.version:
            try:
                model = await self._obtain(name, target.version)
            except Exception as exc:  # the rollout stays as it was; the next poll tries again
                kept = "none" if current is None else current.version
                detail = f"{name}@{role} -> {target.version} failed to load, keeping {kept}: {exc}"
                return self._record(LoadEvent(name, target.version, False, detail))
        # No await from here on: what was loaded is installed before anything can retire it.
        served = self.served.get(name)
        if served is None:
            return None
        before = served.rollout or NO_ROLLOUT
        if role == CANARY:
            weight = target.weight if model is not None and target and target.weight else 0.0
            after = replace(before, canary=model, weight=weight)
        else:
            after = replace(before, shadow=model)
        if after == before:
            return None
        self._set_rollout(name, served, before, after)
        detail = _describe_move(name, role, before, after)
        return self._record(LoadEvent(name, None if model is None else model.version, True, detail))

    def _set_rollout(self, name: str, served: Served, before: Rollout, after: Rollout) -> None:
        served.rollout = None if after == NO_ROLLOUT else after
        for old in before.models():
            if not any(old is kept for kept in after.models()):
                self._retire_later(old)
        for hook in self.on_rollout:
            hook(name, before, after)

    async def _obtain(self, name: str, version: int) -> LoadedModel:
        """The loaded version (even one still draining: it is wanted again), else load it."""
        loaded = self.loaded.get((name, version))
        if loaded is not None:
            return loaded
        return await self._load(ModelRef(name, version=version))

    def _retire_later(self, model: LoadedModel) -> None:
        # The loop keeps only weak references to tasks: hold this one until it has finished.
        task = asyncio.get_running_loop().create_task(self._retire(model))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, model: LoadedModel) -> None:
        deadline = time.perf_counter() + self.config.drain_timeout_s
        while model.in_flight and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        # Checked after the drain: an alias moved back meanwhile serves this very object again.
        if self._in_use(model):
            return
        self.loaded.pop((model.name, model.version), None)
        await model.close()

    def _in_use(self, model: LoadedModel) -> bool:
        for served in self.served.values():
            if served.model is model:
                return True
            if served.rollout is not None and any(model is m for m in served.rollout.models()):
                return True
        return False

    async def unload(self, name: str) -> None:
        served = self.served.pop(name, None)
        for key in [k for k in self.loaded if k[0] == name]:
            await self._retire(self.loaded[key])
        if served is None:
            raise ModelNotFound(f"model {name!r} is not loaded")

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            await self.poll_once()

    async def close(self) -> None:
        for model in list(self.loaded.values()):
            await model.close()
        self.loaded.clear()
        self.served.clear()

    def _record(self, event: LoadEvent) -> LoadEvent:
        (log.info if event.ok else log.error)("%s", event.detail)
        self.history = [*self.history[-99:], event]
        for listener in self.listeners:
            listener(event)
        return event


def _role_model(rollout: Rollout, role: str) -> LoadedModel | None:
    return rollout.canary if role == CANARY else rollout.shadow


def _describe_move(name: str, role: str, before: Rollout, after: Rollout) -> str:
    old, new = _role_model(before, role), _role_model(after, role)
    if new is None:
        return f"{name}@{role} removed; {name}:{old.version if old else '?'} retires"
    weight = f" at weight {after.weight:g}" if role == CANARY else ""
    if old is None:
        return f"{name}@{role} -> {name}:{new.version}{weight}"
    return f"{name}@{role} {old.version} -> {new.version}{weight}"


def _version_number(name: str, version: str) -> int:
    # ASCII digits only, and few: str.isdigit() accepts "²", which int() then refuses.
    if not (version.isascii() and version.isdigit() and len(version) <= 9):
        raise ModelNotFound(f"model {name!r} has no version {version!r}: versions are numbers")
    return int(version)


def _one_row(model: LoadedModel) -> list:  # type: ignore[type-arg]
    from ferry.serving.model import sample_column

    return [sample_column(s)[:1] for s in model.signature.inputs]
