"""One verified bundle that turns Arrow batches into output columns.

Classifiers give ``prediction`` (the label, with the bundle's threshold for binary tasks, as
the servers decide it) and one ``probability_<label>`` column per class; regressors give
``prediction``.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pyarrow as pa

from ferry.core.bundle import MODEL, BundleManifest, verify_bundle
from ferry.core.signature import Signature
from ferry.distributed import Engine
from ferry.distributed.feeds import Feeds, batch_feeds
from ferry.errors import DataError
from ferry.serving.model import LABEL_OUTPUT, PROBA_OUTPUT
from ferry.serving.runtime import OnnxModel

_T = TypeVar("_T")

if TYPE_CHECKING:  # onnx and numba load only when trees are compiled
    from ferry.distributed.compiled import CompiledGraph

PREDICTION = "prediction"
PROBABILITY_PREFIX = "probability_"
# Below this a slice costs more in call overhead than it gains in parallelism.
MIN_SLICE_ROWS = 4096
# The compiled trees are checked against the whole graph in ONNX Runtime on this many rows.
PARITY_ROWS = 4096
# Probabilities may differ by float32 rounding of the sums; anything more is a disagreement.
PARITY_TOLERANCE = 1e-5


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def output_names(manifest: BundleManifest) -> list[str]:
    if manifest.task == "regression":
        return [PREDICTION]
    return [PREDICTION, *(f"{PROBABILITY_PREFIX}{label}" for label in manifest.labels or [])]


def output_schema(manifest: BundleManifest) -> pa.Schema:
    if manifest.task == "regression":
        return pa.schema([(PREDICTION, pa.float32())])
    names = output_names(manifest)
    return pa.schema([(names[0], pa.string()), *((n, pa.float32()) for n in names[1:])])


class BundleScorer:
    """A bundle's graph in ONNX Runtime; ``score`` is thread-safe, as ORT sessions are.

    With ``engine`` "auto" or "compiled" a tree ensemble runs in ``distributed.compiled``
    instead, once it has given ONNX Runtime's answer on the first rows scored; "auto" falls
    back to ONNX Runtime, with the reason in ``engine``, where "compiled" refuses.

    A chunk is cut into ``threads`` slices run side by side, each on one ORT thread: on these
    small graphs that beats one call with ``threads`` intra-op threads by 15-20 %, as every
    operator, not only the tree ensemble, runs in parallel (and the results do not depend on
    the thread count). Batch scoring takes every core by default: nothing else here needs them.
    """

    def __init__(
        self, bundle_dir: Path, threads: int | None = None, engine: Engine = "onnxruntime"
    ) -> None:
        self.manifest = verify_bundle(bundle_dir)
        self.runtime = OnnxModel(bundle_dir / MODEL, intra_threads=1)
        self.threads = threads or cores()
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ferry-graph")
        self.labels = pa.array(self.manifest.labels or [], pa.string())
        self.names = output_names(self.manifest)
        self.compiled: CompiledGraph | None = None
        self.engine = "onnxruntime"
        self.checking = threading.Lock()
        self.compiling: Future[tuple[CompiledGraph | None, str]] | None = None
        self.required = engine == "compiled"
        if engine != "onnxruntime":
            # Loading numba and the cached kernel takes about half a second, spent while the
            # first chunk is read and fed; the first chunk then waits for it. Scoring chunks
            # in ONNX Runtime meanwhile was no faster: the threads slowed each other down.
            self.compiling = _in_background(_compile, bundle_dir / MODEL)

    @property
    def signature(self) -> Signature:
        return self.manifest.signature

    def close(self) -> None:
        self.pool.shutdown()

    def score(self, batch: pa.RecordBatch, first_row: int = 0) -> pa.RecordBatch:
        """Output columns for ``batch`` (which may hold more columns than the graph takes)."""
        if self.compiling is not None:
            self._adopt(batch.slice(0, PARITY_ROWS), first_row)
        codes = self.compiled.categories if self.compiled is not None else None
        feeds = batch_feeds(self.signature, batch, first_row, codes)
        outputs = self.run(feeds, batch.num_rows)
        return pa.RecordBatch.from_arrays(self._columns(outputs), names=self.names)

    def run(self, feeds: Feeds, rows: int) -> dict[str, np.ndarray]:
        graph = self.compiled.run if self.compiled is not None else self.runtime.run
        parts = min(self.threads, max(1, rows // MIN_SLICE_ROWS))
        if parts == 1:
            return graph(feeds)
        bounds = np.linspace(0, rows, parts + 1).astype(int)
        slices = [{k: v[a:b] for k, v in feeds.items()} for a, b in itertools.pairwise(bounds)]
        results = list(self.pool.map(graph, slices))
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    def _adopt(self, head: pa.RecordBatch, first_row: int) -> None:
        """The compiled graph serves from now on if it gives ONNX Runtime's answer on these
        rows; "compiled" refuses a graph it cannot compile, "auto" says why it kept ORT."""
        with self.checking:
            if self.compiling is None:
                return  # another thread adopted it meanwhile
            compiled, reason = self.compiling.result()
            self.compiling = None
            if compiled is None and self.required:
                raise DataError(f"--engine compiled: this model cannot be compiled: {reason}")
            if compiled is None:
                self.engine = f"onnxruntime ({reason})"
                return
            texts = batch_feeds(self.signature, head, first_row)
            coded = batch_feeds(self.signature, head, first_row, compiled.categories)
            differences = disagreement(self.runtime.run(texts), compiled.run(coded))
            if differences and self.required:
                raise DataError(
                    f"--engine compiled: the compiled trees disagree with ONNX Runtime on the "
                    f"first rows ({differences}); score with --engine onnxruntime"
                )
            if differences:
                self.engine = f"onnxruntime (the compiled trees disagreed: {differences})"
            else:
                self.compiled = compiled
                self.engine = f"compiled trees (equal to ONNX Runtime on {head.num_rows:,} rows)"

    def _columns(self, outputs: dict[str, np.ndarray]) -> list[pa.Array]:
        if self.manifest.task == "regression":
            first = self.signature.outputs[0].name
            return [pa.array(outputs[first].reshape(-1))]
        proba = outputs[PROBA_OUTPUT]
        # A dictionary over the labels: no string per row to build, and none to hash when
        # the column is written (it reads back as plain text).
        decided = pa.array(self._decide(outputs, proba).astype(np.int32, copy=False))
        columns = [pa.DictionaryArray.from_arrays(decided, self.labels)]
        columns += [pa.array(np.ascontiguousarray(proba[:, i])) for i in range(proba.shape[1])]
        return columns

    def _decide(self, outputs: dict[str, np.ndarray], proba: np.ndarray) -> np.ndarray:
        # As serving.model.LoadedModel.decide: the manifest's threshold for binary tasks.
        threshold = self.manifest.threshold
        if self.manifest.task == "binary" and threshold is not None:
            return (proba[:, 1] >= threshold).astype(np.int64)
        return outputs[LABEL_OUTPUT].reshape(-1).astype(np.int64, copy=False)


def _in_background(work: Callable[[Path], _T], graph: Path) -> Future[_T]:
    """``work`` on a thread of its own, so that reading the first chunk goes on meanwhile."""
    done: Future[_T] = Future()

    def run() -> None:
        try:
            done.set_result(work(graph))
        except BaseException as exc:  # handed to whoever waits for the result
            done.set_exception(exc)

    threading.Thread(target=run, name="ferry-compile", daemon=True).start()
    return done


def _compile(graph: Path) -> tuple[CompiledGraph | None, str]:
    from ferry.distributed.compiled import compile_graph

    try:
        return compile_graph(graph)
    except Exception as exc:  # numba or ORT failing on a graph: ONNX Runtime scores it whole
        return None, f"the trees could not be compiled ({type(exc).__name__}: {exc})"[:300]


def disagreement(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> str:
    """Empty when ``got`` equals ONNX Runtime's ``expected`` (floats within tolerance)."""
    for name, want in expected.items():
        have = got[name]
        if want.shape != have.shape:
            return f"{name} has shape {have.shape}, not {want.shape}"
        if want.dtype.kind == "f":
            worst = float(np.nanmax(np.abs(want - have), initial=0.0))
            if worst > PARITY_TOLERANCE or not np.array_equal(np.isnan(want), np.isnan(have)):
                return f"{name} differs by up to {worst:.2g}"
        elif not np.array_equal(want, have):
            return f"{name} differs on {int(np.sum(want != have))} row(s)"
    return ""
