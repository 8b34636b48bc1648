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
Graph = Callable[[Feeds], dict[str, np.ndarray]]

if TYPE_CHECKING:  # onnx and numba load only when trees are compiled
    from ferry.distributed.compiled import CompiledGraph

PREDICTION = "prediction"
PROBABILITY_PREFIX = "probability_"
# Below this a slice costs more in call overhead than it gains in parallelism.
MIN_SLICE_ROWS = 4096
# The compiled trees are checked against the whole graph in ONNX Runtime on this many rows
# before they serve, then on the first SPOT_ROWS of every chunk.
PARITY_ROWS = 4096
SPOT_ROWS = 256
DISAGREE = "the compiled trees disagree with ONNX Runtime"
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
    instead, once it has given ONNX Runtime's answer on the first rows scored. After that,
    the first rows of every chunk are scored by both, and rows whose decision is within
    rounding of flipping are given ONNX Runtime's answer. On any disagreement "auto" goes back
    to ONNX Runtime, with the reason in ``engine``, and "compiled" refuses.

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
        self.refusal = ""  # set once "compiled" refused: every later chunk is refused too
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
        if self.refusal:
            raise DataError(self.refusal)
        if self.compiling is not None and batch.num_rows:  # checked on rows, not on none
            self._adopt(batch.slice(0, PARITY_ROWS), first_row)
        compiled = self.compiled
        if compiled is None:
            outputs = self._whole(batch, first_row)
        else:
            outputs = self._split(compiled, batch, first_row)
        return pa.RecordBatch.from_arrays(self._columns(outputs), names=self.names)

    def run(self, feeds: Feeds, rows: int) -> dict[str, np.ndarray]:
        """The whole graph in ONNX Runtime, in slices side by side."""
        return self._sliced(self.runtime.run, feeds, rows)

    def _sliced(self, graph: Graph, feeds: Feeds, rows: int) -> dict[str, np.ndarray]:
        parts = min(self.threads, max(1, rows // MIN_SLICE_ROWS))
        if parts == 1:
            return graph(feeds)
        bounds = np.linspace(0, rows, parts + 1).astype(int)
        slices = [{k: v[a:b] for k, v in feeds.items()} for a, b in itertools.pairwise(bounds)]
        results = list(self.pool.map(graph, slices))
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    def _whole(self, batch: pa.RecordBatch, first_row: int) -> dict[str, np.ndarray]:
        return self.run(batch_feeds(self.signature, batch, first_row), batch.num_rows)

    def _split(
        self, compiled: CompiledGraph, batch: pa.RecordBatch, first_row: int
    ) -> dict[str, np.ndarray]:
        """The compiled graph's answer, spot-checked on the chunk's first rows, with ONNX
        Runtime's answer for rows whose decision rounding could flip."""
        coded = batch_feeds(self.signature, batch, first_row, compiled.categories)
        try:
            outputs = self._sliced(compiled.run, coded, batch.num_rows)
        except Exception as exc:  # the split graph failing where the whole one runs
            self._drop(
                f"the compiled trees failed on the chunk from data row {first_row + 1} ({exc})"[
                    :300
                ]
            )
            return self._whole(batch, first_row)
        spot = batch.slice(0, SPOT_ROWS)
        expected = self.runtime.run(batch_feeds(self.signature, spot, first_row))
        differences = disagreement(expected, {k: v[: spot.num_rows] for k, v in outputs.items()})
        if differences:
            self._drop(f"{DISAGREE} on the chunk from data row {first_row + 1}: {differences}")
            return self._whole(batch, first_row)
        near = near_decision(self.manifest, outputs)
        if near.size:
            exact = self.runtime.run(batch_feeds(self.signature, batch.take(near), first_row))
            for name, values in exact.items():
                outputs[name][near] = values
        return outputs

    def _adopt(self, head: pa.RecordBatch, first_row: int) -> None:
        """The compiled graph serves from now on if it gives ONNX Runtime's answer on these
        rows; "compiled" refuses a graph it cannot compile, "auto" says why it kept ORT."""
        with self.checking:
            pending, self.compiling = self.compiling, None
            if pending is None:
                return  # another thread adopted it meanwhile
            compiled, reason = pending.result()
            if compiled is None:
                self._drop(f"this model cannot be compiled: {reason}")
                return
            differences = self._compare(compiled, head, first_row)
            if differences:
                self._drop(f"{DISAGREE} on the first rows: {differences}")
            else:
                self.compiled = compiled
                self.engine = f"compiled trees (equal to ONNX Runtime on {head.num_rows:,} rows)"

    def _compare(self, compiled: CompiledGraph, head: pa.RecordBatch, first_row: int) -> str:
        texts = batch_feeds(self.signature, head, first_row)
        try:
            coded = batch_feeds(self.signature, head, first_row, compiled.categories)
            return disagreement(self.runtime.run(texts), compiled.run(coded))
        except Exception as exc:  # the split graph failing where the whole one runs
            return f"the compiled graph failed ({type(exc).__name__}: {str(exc)[:200]})"

    def _drop(self, what: str) -> None:
        """Back to ONNX Runtime ("auto"), or a refusal of this and every later chunk."""
        self.compiled = None
        if self.required:
            self.refusal = (
                f"--engine compiled: {what}; score with --engine auto (which falls back to "
                "ONNX Runtime) or --engine onnxruntime"
            )
            raise DataError(self.refusal)
        self.engine = f"onnxruntime ({what})"

    def _columns(self, outputs: dict[str, np.ndarray]) -> list[pa.Array]:
        if self.manifest.task == "regression":
            first = self.signature.outputs[0].name
            return [pa.array(outputs[first].reshape(-1))]
        proba = outputs[PROBA_OUTPUT]
        # A dictionary over the labels: no string per row to build, and none to hash when
        # the column is written (pandas reads it back as a category).
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


def near_decision(manifest: BundleManifest, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Rows whose decision lies within ``PARITY_TOLERANCE`` of flipping: the threshold for
    binary tasks, the runner-up for several classes."""
    proba = outputs.get(PROBA_OUTPUT)
    if manifest.task == "regression" or proba is None or proba.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if manifest.task == "binary":
        threshold = 0.5 if manifest.threshold is None else manifest.threshold
        margin = np.abs(proba[:, 1] - threshold)
    else:
        top = np.sort(proba, axis=1)[:, -2:]
        margin = top[:, 1] - top[:, 0]
    return np.flatnonzero(margin <= PARITY_TOLERANCE)


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
