"""``ferry predict``: score a Parquet or CSV file through a bundle's graph, chunk by chunk.

Reading, feeding and writing go through Arrow and numpy only (no pandas), so memory is a few
chunks whatever the file size. With a Dask scheduler address the chunks are scored on the
cluster's workers and written here, in input order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from ferry.core.bundle import BundleManifest, verify_bundle
from ferry.distributed import DEFAULT_CHUNK_ROWS, Engine
from ferry.distributed.files import ChunkReader, ChunkWriter, file_format, open_reader
from ferry.distributed.scorer import BundleScorer, output_names, output_schema
from ferry.errors import DataError, SignatureError

__all__ = ["DEFAULT_CHUNK_ROWS", "ScoreReport", "score_file"]

# "auto" compiles trees only for files this large: below it, loading numba (and the first
# compilation on a new machine) costs more than the trees do in ONNX Runtime.
COMPILE_MIN_ROWS = 200_000


class ScoreObserver(Protocol):
    def start(self, total_rows: int | None) -> None: ...

    def advance(self, rows: int) -> None: ...


class QuietObserver:
    def start(self, total_rows: int | None) -> None:
        return None

    def advance(self, rows: int) -> None:
        return None


@dataclass
class ScoreReport:
    output: Path
    rows: int = 0
    chunks: int = 0
    seconds: float = 0.0
    workers: dict[str, int] = field(default_factory=dict)  # Dask worker -> chunks it scored
    engine: str = "onnxruntime"  # what ran the graph, and why when not the compiled trees

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ColumnPlan:
    read: list[str]  # columns read from the file, in file order
    kept: list[str]  # input columns copied to the output
    features: list[str]  # graph inputs


def plan_columns(
    columns: list[str], manifest: BundleManifest, keep: list[str] | None, source: Path
) -> ColumnPlan:
    """Check the file's columns against the signature and decide what to read and keep."""
    features = manifest.signature.input_names()
    missing = [name for name in features if name not in columns]
    if missing:
        raise SignatureError(
            f"input file {source.name!r} lacks column(s) {missing} that model "
            f"{manifest.name!r} needs (it takes {features}; the file has {columns}); add "
            "them, or rename the file's columns to these names (empty values are allowed "
            "where the model was trained with missing values)"
        )
    kept = list(columns) if keep is None else list(dict.fromkeys(keep))
    unknown = [name for name in kept if name not in columns]
    if unknown:
        raise DataError(f"--columns {unknown} are not columns of {source.name!r}: it has {columns}")
    clash = [name for name in output_names(manifest) if name in kept]
    if clash:
        raise DataError(
            f"input file {source.name!r} already has column(s) {clash}, which scoring adds; "
            "rename them in the file, or pass --columns with only the id columns to keep"
        )
    wanted = {*kept, *features}
    return ColumnPlan([c for c in columns if c in wanted], kept, features)


class ChunkSink:
    """Joins kept input columns and outputs, writes the chunk and reports progress.

    Text read as dictionaries (``files.ParquetReader``) and the predicted labels stay
    dictionaries: Parquet stores them as dictionary-encoded text either way, and decoding them
    to write them again made scoring 25-30% slower. Readers that follow the Arrow schema
    (pyarrow, pandas, Polars) see them as dictionary (category) columns, others as text."""

    def __init__(self, writer: ChunkWriter, plan: ColumnPlan, observer: ScoreObserver) -> None:
        self.writer, self.plan, self.observer = writer, plan, observer
        self.rows = 0
        self.chunks = 0

    def put(self, batch: pa.RecordBatch, outputs: pa.RecordBatch) -> None:
        kept = batch.select(self.plan.kept)
        joined = pa.RecordBatch.from_arrays(
            [*kept.columns, *outputs.columns], names=[*self.plan.kept, *outputs.schema.names]
        )
        self.writer.write(joined)
        self.rows += batch.num_rows
        self.chunks += 1
        self.observer.advance(batch.num_rows)


def score_file(
    bundle_dir: Path,
    source: Path,
    output: Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep: list[str] | None = None,
    dask_address: str | None = None,
    observer: ScoreObserver | None = None,
    threads: int | None = None,
    engine: Engine = "auto",
) -> ScoreReport:
    """Score ``source`` into ``output`` (Parquet or CSV by name); ``keep`` limits the copied
    input columns (default: all). ``threads`` (graph calls side by side) defaults to the cores.
    ``engine``: see ``BundleScorer``; on Dask each worker process compiles its own."""
    _check_arguments(source, output, chunk_rows)
    started = time.perf_counter()
    manifest = verify_bundle(bundle_dir)
    reader = open_reader(source, manifest.signature)
    plan = plan_columns(reader.columns, manifest, keep, source)
    observer = observer or QuietObserver()
    report = ScoreReport(output)
    with ChunkWriter(output) as writer:
        sink = ChunkSink(writer, plan, observer)
        observer.start(reader.total_rows)
        chunks = reader.chunks(chunk_rows, plan.read)
        engine = _engine(engine, reader.total_rows)
        if dask_address:
            report.workers, report.engine = _score_there(
                dask_address, bundle_dir, chunks, plan, sink, engine
            )
        else:
            scorer = BundleScorer(bundle_dir, threads, engine)
            try:
                _score_here(scorer, chunks, sink)
            finally:
                scorer.close()
            report.engine = scorer.engine
        writer.finish(_empty_schema(reader, plan, manifest))
    report.rows, report.chunks = sink.rows, sink.chunks
    report.seconds = time.perf_counter() - started
    return report


def _score_here(scorer: BundleScorer, chunks: Iterator[pa.RecordBatch], sink: ChunkSink) -> None:
    """Score chunk n while chunk n+1 is read and chunk n-1 written: Arrow's readers and writers
    release the GIL, so the I/O overlaps the graph (three chunks in memory at most)."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ferry-io") as io:
        ahead = io.submit(next, chunks, None)
        writing: Future[None] | None = None
        first_row = 0
        while (batch := ahead.result()) is not None:
            ahead = io.submit(next, chunks, None)
            outputs = scorer.score(batch, first_row)
            first_row += batch.num_rows
            if writing is not None:
                writing.result()
            writing = io.submit(sink.put, batch, outputs)
        if writing is not None:
            writing.result()


def _score_there(
    address: str,
    bundle_dir: Path,
    chunks: Iterator[pa.RecordBatch],
    plan: ColumnPlan,
    sink: ChunkSink,
    engine: Engine,
) -> tuple[dict[str, int], str]:
    """On the Dask cluster: chunks per worker, and what ran the graph on the workers."""
    from ferry.distributed.cluster import score_on_cluster

    workers, engines = score_on_cluster(address, bundle_dir, chunks, plan, sink, engine)
    return workers, "; ".join(sorted(engines)) or "onnxruntime"


def _engine(asked: Engine, total_rows: int | None) -> Engine:
    if asked == "auto" and total_rows is not None and total_rows < COMPILE_MIN_ROWS:
        return "onnxruntime"
    return asked


def _empty_schema(reader: ChunkReader, plan: ColumnPlan, manifest: BundleManifest) -> pa.Schema:
    kept = reader.schema(plan.kept)
    return pa.schema([*kept, *output_schema(manifest)])


def _check_arguments(source: Path, output: Path, chunk_rows: int) -> None:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise DataError(
            f"--chunk-rows must be a positive whole number of rows; received {chunk_rows!r}"
        )
    file_format(output, "output")  # before any work: a wrong name fails at once
    if output.absolute() == source.absolute():
        raise DataError(
            f"the output {str(output)!r} is the input file; write the scores to another file"
        )
