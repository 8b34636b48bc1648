"""Parquet and CSV files read in chunks and written chunk by chunk.

Memory stays bounded whatever the file size: a reader holds one chunk (and Parquet one row
group's compressed pages), a writer flushes each chunk as it comes. Output goes to a hidden
partial file renamed over the destination only when every chunk is written.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ferry.core.signature import Signature
from ferry.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz")
_PROBE_BYTES = 1 << 20
_REASON_CHARS = 300
_DICTIONARY_SHARE = 0.5
_PROBE_ROWS = 10_000
_T = TypeVar("_T")


def file_format(path: Path, role: str) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataError(
        f"{role} file {str(path)!r}: expected a name ending in "
        f"{', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)}; rename it if it is one of those "
        "formats, or convert it to Parquet or CSV"
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:_REASON_CHARS] if text else type(exc).__name__


class ChunkReader(Protocol):
    columns: list[str]
    total_rows: int | None

    def chunks(self, chunk_rows: int, wanted: list[str]) -> Iterator[pa.RecordBatch]: ...

    def schema(self, wanted: list[str]) -> pa.Schema: ...


def open_reader(path: Path, signature: Signature) -> ChunkReader:
    kind = file_format(path, "input")
    if not path.is_file():
        raise DataError(
            f"input file not found: {str(path)!r} (resolved to {str(path.absolute())!r}); "
            "check the path"
        )
    if kind == "csv":
        return CsvReader(path, signature)
    categories = [s.name for s in signature.inputs if s.kind == "categorical"]
    return ParquetReader(path, categories)


class ParquetReader:
    """Text columns that repeat their values (``categories``, and any other whose first rows
    do) are read as Arrow dictionaries, as Parquet usually stores them: feeding and writing
    them then costs no hashing (``batch.ChunkSink`` says how they are written)."""

    def __init__(self, path: Path, categories: list[str] | None = None) -> None:
        self.path = path
        try:
            self.file = pq.ParquetFile(path)
            self.file_schema = self.file.schema_arrow  # the types as written
            repeated = _repeated_text(self.file, set(categories or []))
            if repeated:
                self.file = pq.ParquetFile(path, read_dictionary=repeated)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"input file {str(path)!r} is not a readable Parquet file ({_reason(exc)}); "
                "check that it was written completely, or name a CSV file .csv"
            ) from exc
        self.columns: list[str] = list(self.file.schema_arrow.names)
        self.total_rows: int | None = self.file.metadata.num_rows

    def schema(self, wanted: list[str]) -> pa.Schema:
        """The file's own types (text, not the dictionaries it is read as)."""
        return pa.schema([self.file_schema.field(name) for name in wanted])

    def chunks(self, chunk_rows: int, wanted: list[str]) -> Iterator[pa.RecordBatch]:
        # One reader per row group: a reader over the whole file keeps a little of every row
        # group it has read (~20 MB per million rows here), so memory would grow with the file.
        for group in range(self.file.metadata.num_row_groups):
            batches = self.file.iter_batches(
                batch_size=chunk_rows, row_groups=[group], columns=wanted, use_threads=True
            )
            yield from self._read(batches)

    def _read(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise DataError(
                    f"input file {str(self.path)!r} cannot be read past a point "
                    f"({_reason(exc)}); the file is damaged: write it again"
                ) from exc
            yield batch


class CsvReader:
    """CSV read as the lab reads it, with fixed types so every block parses alike.

    Numeric features are read as float64; every other column as text (booleans, datetimes and
    categories are decoded in ``feeds``; other columns pass through as written).
    """

    def __init__(self, path: Path, signature: Signature) -> None:
        self.path = path
        self.numeric = {
            s.name for s in signature.inputs if s.dtype != "string" and s.kind == "numeric"
        }
        try:
            probe = pacsv.open_csv(self._stream(), read_options=self._options(_PROBE_BYTES))
            self.columns = list(probe.schema.names)
            sample = probe.read_next_batch()
        except StopIteration:
            sample = None
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"input file {str(path)!r} is not readable CSV ({_reason(exc)}); expected a "
                "header row and comma-separated rows"
            ) from exc
        plain = not path.name.lower().endswith(".gz")
        size = path.stat().st_size
        probed = min(size, _PROBE_BYTES) if plain else _PROBE_BYTES
        self.bytes_per_row = probed / max(1, sample.num_rows) if sample else 100.0
        # An estimate for the progress bar: the probe's rows stand for the whole file.
        self.total_rows: int | None = round(size / self.bytes_per_row) if plain else None

    def _stream(self) -> pa.NativeFile:
        return pa.input_stream(str(self.path), compression="detect")

    def _options(self, block_size: int) -> pacsv.ReadOptions:
        return pacsv.ReadOptions(block_size=block_size, use_threads=True)

    def schema(self, wanted: list[str]) -> pa.Schema:
        text = pa.large_string()
        return pa.schema([(c, pa.float64() if c in self.numeric else text) for c in wanted])

    def chunks(self, chunk_rows: int, wanted: list[str]) -> Iterator[pa.RecordBatch]:
        convert = pacsv.ConvertOptions(
            column_types=dict(zip(wanted, self.schema(wanted).types, strict=True)),
            include_columns=wanted,
            strings_can_be_null=True,
        )
        block = int(min(max(chunk_rows * self.bytes_per_row, _PROBE_BYTES), 1 << 30))
        options = self._options(block)
        # Opening parses the first block already: a bad value there fails here.
        reader = self._parsed(lambda: pacsv.open_csv(self._stream(), options, None, convert))
        while True:
            try:
                batch = self._parsed(reader.read_next_batch)
            except StopIteration:
                return
            for start in range(0, batch.num_rows, chunk_rows):
                yield batch.slice(start, chunk_rows)

    def _parsed(self, read: Callable[[], _T]) -> _T:
        try:
            return read()
        except pa.ArrowInvalid as exc:
            raise DataError(
                f"input file {str(self.path)!r}: {_reason(exc)}; numeric model inputs "
                "must hold numbers (leave a cell empty for a missing value)"
            ) from exc


class ChunkWriter:
    """Parquet (one row group per chunk) or CSV, by the destination's name."""

    def __init__(self, path: Path) -> None:
        self.kind = file_format(path, "output")
        self.path = path
        self.partial = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pacsv.CSVWriter | None = None
        self._sink: pa.NativeFile | None = None

    def __enter__(self) -> ChunkWriter:
        if not self.path.parent.is_dir():
            raise DataError(
                f"output directory {str(self.path.parent)!r} does not exist; create it first"
            )
        return self

    def write(self, batch: pa.RecordBatch) -> None:
        if self.kind == "parquet":
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(
                    self.partial, batch.schema, use_dictionary=dictionary_columns(batch)
                )
            self._parquet.write_batch(batch, row_group_size=max(1, batch.num_rows))
            return
        batch = _plain(batch)  # CSV has no dictionaries
        if self._csv is None:
            compression = "gzip" if self.path.name.lower().endswith(".gz") else None
            self._sink = pa.output_stream(str(self.partial), compression=compression)
            self._csv = pacsv.CSVWriter(self._sink, batch.schema)
        self._csv.write_batch(batch)

    def finish(self, schema: pa.Schema) -> None:
        """Close the file; a file with no rows still gets its header (its schema)."""
        if self._parquet is None and self._csv is None:
            self.write(pa.RecordBatch.from_pylist([], schema=schema))
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()
            assert self._sink is not None
            self._sink.close()
        os.replace(self.partial, self.path)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            return
        for writer in (self._parquet, self._csv, self._sink):
            # Already failing: the first error is the one to report.
            with contextlib.suppress(pa.ArrowException, OSError):
                if writer is not None:
                    writer.close()
        self.partial.unlink(missing_ok=True)


def _repeated_text(file: pq.ParquetFile, categories: set[str]) -> list[str]:
    """Text columns to read as dictionaries: the model's categories, and the others whose
    first rows repeat their values."""
    schema = file.schema_arrow
    text = [
        f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    if not text or file.metadata.num_rows == 0:
        return []
    probe = next(file.iter_batches(batch_size=_PROBE_ROWS, columns=text))
    return [name for name in text if name in categories or _repeats(probe.column(name))]


def _repeats(column: pa.Array) -> bool:
    return pc.count_distinct(column).as_py() <= _DICTIONARY_SHARE * max(1, len(column))


def dictionary_columns(batch: pa.RecordBatch) -> list[str]:
    """Text columns that repeat their values (in the first chunk): dictionary pages pay for
    themselves there, while on numbers and ids they cost a third of the writing time."""
    return [
        field.name
        for field, column in zip(batch.schema, batch.columns, strict=True)
        if pa.types.is_dictionary(field.type) or (_is_text(field.type) and _repeats(column))
    ]


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    if not any(pa.types.is_dictionary(f.type) for f in batch.schema):
        return batch
    arrays = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
