"""Dask: connect to a scheduler, and score file chunks on its workers.

The bundle's files travel to the workers once (scattered); each worker process verifies and
loads them once and keeps the session, keyed by the sha256 of the manifest. The client reads
chunks, keeps a bounded number in flight and writes the results in input order.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import tempfile
import threading
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from ferry.core.bundle import MANIFEST, verify_bundle
from ferry.distributed import Engine
from ferry.distributed.scorer import BundleScorer, cores
from ferry.errors import ErrorCode, FerryError

if TYPE_CHECKING:
    from distributed import Client, Future

    from ferry.distributed.batch import ChunkSink, ColumnPlan

CONNECT_TIMEOUT_S = 10
WORKERS_TIMEOUT_S = 30
# Bundles a worker keeps loaded: a scheduler shared by jobs scoring different models.
_KEEP_LOADED = 2


@contextmanager
def dask_client(address: str) -> Iterator[Client]:
    """A client of the scheduler at ``address`` with at least one worker, closed on exit."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise FerryError(
            "--dask needs Dask installed: pip install 'ferry-ml[dask]'",
            code=ErrorCode.FAILED_PRECONDITION,
        ) from exc
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise FerryError(
            f"cannot reach the Dask scheduler at --dask {address!r} ({exc}); start one "
            "(`dask scheduler`, then `dask worker ADDRESS` on each machine) or fix the address",
            code=ErrorCode.UNAVAILABLE,
        ) from exc
    try:
        _wait_for_workers(client, address)
        yield client
    finally:
        client.close()


def _wait_for_workers(client: Client, address: str) -> None:
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except TimeoutError as exc:
        raise FerryError(
            f"the Dask scheduler at {address!r} has no workers after {WORKERS_TIMEOUT_S} s; "
            f"start some with `dask worker {address}`",
            code=ErrorCode.UNAVAILABLE,
        ) from exc


def worker_threads(client: Client) -> int:
    return sum(client.nthreads().values())


def _host_and_cores() -> tuple[str, int]:
    return socket.gethostname(), cores()


def graph_threads(client: Client) -> dict[str, int]:
    """Graph threads per worker: its host's cores shared by the host's worker threads."""
    where: dict[str, tuple[str, int]] = client.run(_host_and_cores)
    nthreads: dict[str, int] = client.nthreads()
    per_host = Counter[str]()
    for address, (host, _) in where.items():
        per_host[host] += nthreads.get(address, 1)
    return {
        address: max(1, host_cores // max(1, per_host[host]))
        for address, (host, host_cores) in where.items()
    }


@dataclass(frozen=True)
class BundleFiles:
    """A verified bundle's files as bytes, keyed by the sha256 of its manifest."""

    key: str
    files: dict[str, bytes]

    @classmethod
    def read(cls, bundle_dir: Path) -> BundleFiles:
        manifest = verify_bundle(bundle_dir)
        names = [MANIFEST, *manifest.files]
        files = {name: (bundle_dir / name).read_bytes() for name in names}
        return cls(hashlib.sha256(files[MANIFEST]).hexdigest(), files)


_LOADED: OrderedDict[str, tuple[BundleScorer, Path]] = OrderedDict()
_LOCK = threading.Lock()
LOADS = Counter[str]()  # bundle key -> times this process loaded it (once, unless evicted)


def loaded_scorer(
    bundle: BundleFiles, threads: int, engine: Engine = "onnxruntime", job: str = ""
) -> BundleScorer:
    """This process's scorer for ``bundle``: written to a temporary directory, verified and
    loaded on first use, then reused by every task (sessions are thread-safe). Compiled
    trees are loaded per ``job``, so that each job checks them on its own rows."""
    key = bundle.key if engine == "onnxruntime" else f"{bundle.key}-{engine}-{job}"
    with _LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key][0]
        directory = Path(tempfile.mkdtemp(prefix=f"ferry-bundle-{bundle.key[:12]}-"))
        for name, data in bundle.files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
        _LOADED[key] = (BundleScorer(directory, threads, engine), directory)
        LOADS[bundle.key] += 1
        while len(_LOADED) > _KEEP_LOADED:
            _, (evicted, old) = _LOADED.popitem(last=False)
            evicted.close()
            shutil.rmtree(old, ignore_errors=True)
        return _LOADED[key][0]


def score_chunk(
    bundle: BundleFiles,
    features: pa.RecordBatch,
    first_row: int,
    threads: dict[str, int],
    engine: Engine = "onnxruntime",
    job: str = "",
) -> tuple[pa.RecordBatch, str, str]:
    """Runs on a worker: the chunk's output columns, which worker made them, and how."""
    from distributed import get_worker

    address = get_worker().address
    scorer = loaded_scorer(bundle, threads.get(address, 1), engine, job)
    return scorer.score(features, first_row), address, scorer.engine


def score_on_cluster(
    address: str,
    bundle_dir: Path,
    chunks: Iterator[pa.RecordBatch],
    plan: ColumnPlan,
    sink: ChunkSink,
    engine: Engine = "onnxruntime",
) -> tuple[dict[str, int], set[str]]:
    """Score every chunk on the cluster; returns how many chunks each worker scored, and
    what ran the graph there (``BundleScorer.engine``)."""
    with dask_client(address) as client:
        bundle = client.scatter(BundleFiles.read(bundle_dir), broadcast=True, hash=False)
        threads = graph_threads(client)
        # Two chunks per worker thread: one running, one queued behind it.
        limit = 2 * worker_threads(client)
        done = Counter[str]()
        engines: set[str] = set()
        job = uuid.uuid4().hex
        pending: deque[tuple[Future, pa.RecordBatch]] = deque()
        try:
            for batch in chunks:
                first_row = sink.rows + sum(b.num_rows for _, b in pending)
                features = batch.select(plan.features)
                future = client.submit(
                    score_chunk, bundle, features, first_row, threads, engine, job, pure=False
                )
                pending.append((future, batch))
                if len(pending) >= limit:
                    engines.add(_write_oldest(pending, sink, done))
            while pending:
                engines.add(_write_oldest(pending, sink, done))
        finally:
            client.cancel([f for f, _ in pending])
        return dict(done), engines


def _write_oldest(
    pending: deque[tuple[Future, pa.RecordBatch]], sink: ChunkSink, done: Counter[str]
) -> str:
    future, batch = pending.popleft()
    # Errors raised on a worker (a bad value in a chunk) come back as themselves.
    outputs, worker, engine = future.result()
    sink.put(batch, outputs)
    done[worker] += 1
    return str(engine)
