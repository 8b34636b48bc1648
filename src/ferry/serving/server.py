"""The server process: HTTP (uvicorn) and gRPC on one event loop, several worker processes
on one port, and a graceful drain on SIGTERM.

On SIGTERM readiness turns 503 at once while requests keep being served for ``drain_delay_s``
(so load balancers stop sending), then listeners close, accepted requests finish, and the
process exits within ``grace_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from ferry.core.spec import Spec
from ferry.errors import ErrorCode, FerryError
from ferry.registry import open_registry
from ferry.serving.auth import TokenAuth
from ferry.serving.batching import BatchConfig
from ferry.serving.dataplane import DataPlane, Limits
from ferry.serving.grpc import build_grpc_server
from ferry.serving.pool import ModelPool, PoolConfig
from ferry.serving.rest import DEFAULT_MAX_BODY, build_app
from ferry.serving.routing import Rollout

if TYPE_CHECKING:
    import grpc

log = logging.getLogger("ferry.serving")


@dataclass
class ServeConfig:
    refs: list[str]
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int | None = 8081
    workers: int = 1
    registry_url: str | None = None
    artifacts_url: str | None = None
    cache_dir: Path = Path(".ferry/cache")
    poll_interval_s: float = 5.0
    grace_s: float = 30.0
    drain_delay_s: float = 1.0
    max_body: int = DEFAULT_MAX_BODY
    batch: BatchConfig = field(default_factory=BatchConfig)
    per_model_batch: dict[str, BatchConfig] = field(default_factory=dict)
    auth: TokenAuth = field(default_factory=TokenAuth)
    limits: Limits = field(default_factory=Limits)
    log_level: str = "warning"
    monitoring: bool = True
    log_dir: Path | None = Path(".ferry/predictions")
    sample_rate: float = 1.0
    drift_window: int = 500
    log_url: str | None = None  # SQLAlchemy URL of a database prediction log
    spec: Spec | None = None  # ferry.yaml (`ferry serve --spec`): its monitoring section's alerts
    webhook_url: str | None = None  # overrides spec.monitoring.webhook_url
    spec_path: Path | None = None  # what a triggered `ferry retrain` reads
    retrain: bool = False  # start retraining on the spec's triggers (needs spec_path)

    def intra_threads(self) -> int:
        # Every pool (ORT, OpenMP, BLAS) is sized from the worker count: see REFERENCES.md.
        return max(1, (os.cpu_count() or 1) // max(self.workers, 1) // 2)


class ServerStopping(FerryError):
    code = ErrorCode.UNAVAILABLE
    retry_after_s = 1


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the Ferry server decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class FerryServer:
    def __init__(self, config: ServeConfig, alerting: bool = True) -> None:
        self.config = config
        self.alerting = alerting
        registry = None
        if config.registry_url:
            registry = open_registry(config.registry_url, config.artifacts_url or "")
        self.pool = ModelPool(
            registry,
            config.cache_dir,
            PoolConfig(
                batch=config.batch,
                per_model_batch=config.per_model_batch,
                intra_threads=config.intra_threads(),
                poll_interval_s=config.poll_interval_s,
                drain_timeout_s=config.grace_s,
            ),
        )
        self.plane = DataPlane(self.pool, config.limits)
        self.app = build_app(self.plane, config.auth, config.max_body)
        self.stopping = asyncio.Event()
        self.stop_requested_at: float | None = None
        self.grpc_port: int | None = None
        self.alerts: Any = None
        self.scheduler: Any = None
        self.monitor = self._monitor() if config.monitoring else None

    def _monitor(self) -> Any:
        # Imported here: monitoring builds on serving, so serving may not import it at the top.
        from ferry.monitoring.drift import DriftConfig
        from ferry.monitoring.metrics import Metrics, scrape
        from ferry.monitoring.monitor import Monitor, MonitorConfig
        from ferry.monitoring.predlog import open_store

        metrics = Metrics()
        rate = self.config.sample_rate
        if self.config.spec is not None:
            rate = min(rate, self.config.spec.monitoring.sample_rate)
        log_store = None
        if self.config.log_url or self.config.log_dir is not None:
            # A database shared by every replica when log_url is set, else local files.
            directory = self.config.log_dir or Path(".ferry/predictions")
            log_store = open_store(directory, self.config.log_url, rate)
        drift = DriftConfig(window=self.config.drift_window)
        if self.config.spec is not None:  # the spec's monitoring section wins over the defaults
            drift = DriftConfig(**self.config.spec.monitoring.drift.model_dump())
        monitor = Monitor(metrics, MonitorConfig(drift=drift), log_store)
        self.plane.on_infer.append(monitor.on_infer)
        self.plane.on_request.append(monitor.on_request)
        self.plane.on_in_flight.append(monitor.on_in_flight)
        self.plane.feedback_handler = monitor.add_feedback
        self.plane.scraper = lambda: scrape(metrics)
        self.pool.listeners.append(monitor.on_load)
        self.pool.on_model_loaded.append(metrics.watch_model)
        attach_rollout_metrics(self.plane, self.pool, metrics)
        from ferry.monitoring.alerts import attach_alerts

        if self.alerting:
            self.alerts = attach_alerts(
                self.plane, monitor, self.config.spec, webhook_url=self.config.webhook_url
            )
            self.scheduler = self._scheduler(monitor)
        return monitor

    def _scheduler(self, monitor: Any) -> Any:
        """Retraining triggers (`ferry serve --spec ferry.yaml --retrain`), on one worker."""
        config = self.config
        if not config.retrain or config.spec is None or config.spec_path is None:
            return None
        from ferry.retraining.scheduler import RetrainScheduler

        scheduler = RetrainScheduler(config.spec, config.spec_path, self.pool.registry)
        monitor.window_listeners.append(scheduler.on_window)
        self.alerts.listeners.append(scheduler.on_alert)
        return scheduler

    def _uvicorn(self) -> _Uvicorn:
        return _Uvicorn(
            uvicorn.Config(
                self.app,
                host=self.config.host,
                port=self.config.port,
                lifespan="off",
                log_level=self.config.log_level,
                access_log=False,
                loop="uvloop",
                http="httptools",
                timeout_graceful_shutdown=max(1, int(self.config.grace_s)),
                limit_concurrency=None,
                server_header=False,
            )
        )

    def request_stop(self) -> None:
        if not self.plane.draining:
            log.warning("stop requested: readiness is now 503, draining")
            self.plane.draining = True
            self.stop_requested_at = time.monotonic()
            self.stopping.set()

    def _grace_left(self) -> float:
        """What is left of ``grace_s`` counted from the stop request, as an orchestrator counts
        its termination grace period from SIGTERM: the drain delay is part of it."""
        if self.stop_requested_at is None:
            return self.config.grace_s
        return max(0.0, self.config.grace_s - (time.monotonic() - self.stop_requested_at))

    async def serve(self, sock: socket.socket | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        http = self._uvicorn()
        http_task: asyncio.Task[None] | None = None
        grpc_server = None
        try:
            shared = self.config.workers > 1
            if not shared:  # a lone server listens at once: live, and not ready while it loads
                http_task = loop.create_task(http.serve(sockets=[sock] if sock else None))
                grpc_server = await self._start_grpc()
            self.pool.starting = True
            for ref in self.config.refs:
                await self.pool.add(ref)
            self.pool.starting = False
            # Everything loaded so far lives as long as the process: keep it out of the
            # collector's scans, which otherwise pause every request (REFERENCES.md: BentoML).
            gc.freeze()
            if shared:
                # A worker takes connections from the shared socket only once its models are
                # loaded: the kernel gives a connection to whichever worker accepts, and one
                # still loading would answer it 404.
                http_task = loop.create_task(http.serve(sockets=[sock] if sock else None))
                grpc_server = await self._start_grpc()
            watcher = loop.create_task(self.pool.watch())
            monitoring = loop.create_task(self.monitor.run()) if self.monitor else None
            alerting = loop.create_task(self.alerts.run()) if self.alerts else None
            schedule = loop.create_task(self.scheduler.run()) if self.scheduler else None
            await self.stopping.wait()
            await asyncio.sleep(self.config.drain_delay_s)
            watcher.cancel()
            if schedule is not None:
                schedule.cancel()
            if monitoring is not None:
                monitoring.cancel()
            if alerting is not None:
                alerting.cancel()
        finally:
            # Also on a failed start: listeners left open would outlive the loop (gRPC then
            # prints a traceback from its finaliser) and the CLI's one-line error.
            await self._shutdown(http, http_task, grpc_server)

    async def _start_grpc(self) -> grpc.aio.Server | None:
        if self.config.grpc_port is None:
            return None
        server, self.grpc_port = build_grpc_server(
            self.plane,
            host=self.config.host,
            port=self.config.grpc_port,
            auth=self.config.auth,
            max_message_bytes=self.config.max_body,
        )
        await server.start()
        return server

    async def _shutdown(
        self,
        http: _Uvicorn,
        http_task: asyncio.Task[None] | None,
        grpc_server: grpc.aio.Server | None,
    ) -> None:
        http.should_exit = True
        left = self._grace_left()
        stops = [http_task] if http_task is not None else []
        if grpc_server is not None:
            stops.append(asyncio.get_running_loop().create_task(grpc_server.stop(left)))
        if stops:
            # Just before the grace period ends, queued requests get a 503 (clients retry
            # elsewhere) instead of being cancelled mid-flight by uvicorn.
            cutoff = asyncio.get_running_loop().call_later(
                max(left - 0.5, 0.0),
                self.pool.fail_pending,
                ServerStopping(
                    "the server stopped before this request was served; retry on another replica"
                ),
            )
            await asyncio.wait(stops, timeout=left)
            cutoff.cancel()
        self.plane.cancel_shadows()  # no client waits for a shadow's answer
        if self.monitor is not None:
            await self.monitor.flush()  # the prediction log loses nothing on a graceful stop
        await self.pool.close()


def attach_rollout_metrics(plane: DataPlane, pool: ModelPool, metrics: Any) -> None:
    """Shadow comparisons and canary weights into their series (``metrics`` is monitoring's
    ``Metrics``; the monitor counts requests by role itself)."""

    def compared(name: str, version: int, rows: int, differing: int) -> None:
        metrics.shadow_rows.labels(name, str(version)).inc(rows)
        metrics.shadow_disagreements.labels(name, str(version)).inc(differing)

    def failed(name: str, version: int) -> None:
        metrics.shadow_failures.labels(name, str(version)).inc()

    def weighted(name: str, before: Rollout, after: Rollout) -> None:
        if before.canary is not None and before.canary is not after.canary:
            metrics.canary_weight.labels(name, str(before.canary.version)).set(0)
        if after.canary is not None:
            metrics.canary_weight.labels(name, str(after.canary.version)).set(after.weight)

    plane.on_shadow.append(compared)
    plane.on_shadow_failed.append(failed)
    plane.on_shadow_skipped.append(lambda name: metrics.shadow_skipped.labels(name).inc())
    pool.on_rollout.append(weighted)


def bind_http(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:  # in use, or no such address: say so in one line
        sock.close()
        raise FerryError(
            f"cannot bind HTTP to {host}:{port}: {exc.strerror or exc}; pick a free port "
            "or another host",
            code=ErrorCode.UNAVAILABLE,
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve(config: ServeConfig, sock: socket.socket | None, alerting: bool = True) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Fewer, larger young-generation collections: a request allocates a few hundred objects,
    # and the default threshold (700) would collect several times per request burst.
    gc.set_threshold(50_000, 20, 100)
    # The monitor's worker thread shares the GIL with the event loop: hand it back sooner.
    sys.setswitchinterval(0.001)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    import uvloop

    uvloop.run(FerryServer(config, alerting).serve(sock))


def _worker(config: ServeConfig, sock: socket.socket | None, index: int) -> None:
    """A child process of ``run``: it logs why it cannot serve and exits non-zero.

    Only the first worker evaluates alerts, on its share of the traffic (a sample of it):
    one engine per server, so each alert is posted and recorded once."""
    try:
        _serve(config, sock, alerting=index == 0)
    except FerryError as exc:
        log.error("cannot serve: %s", exc)
        raise SystemExit(2) from None


def _multiprocess_metrics_dir() -> str | None:
    """Several workers share metrics through prometheus_client's files in one fresh dir.

    Returns the directory when this call created it (the caller removes it at exit)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ferry-metrics-")
    return os.environ["PROMETHEUS_MULTIPROC_DIR"]


def run(config: ServeConfig) -> int:
    """Run in this process (one worker) or supervise ``workers`` processes sharing the port."""
    # Bound here, not by uvicorn, so a port in use is a FerryError: the CLI's one-line error.
    sock = bind_http(config.host, config.port)
    if config.workers <= 1:
        with sock:
            _serve(config, sock)
        return 0
    metrics_dir = _multiprocess_metrics_dir()
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_worker, args=(config, sock, index), daemon=False)
        for index in range(config.workers)
    ]
    for child in children:
        child.start()

    def forward(signum: int, frame: object) -> None:
        for child in children:
            if child.pid and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    sock.close()
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return max((child.exitcode or 0) for child in children)
