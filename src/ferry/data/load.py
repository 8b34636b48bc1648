"""Load a dataset from ``builtin:NAME``, CSV or Parquet, and fingerprint its content."""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ferry.data.builtin import BUILTIN_NAMES, load_builtin
from ferry.errors import DataError

BUILTIN_PREFIX = "builtin:"
SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")

# ISO 8601 dates with optional time, fraction and offset: 2024-01-31, 2024-01-31T12:00:00.5Z
_ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_DATETIME_SAMPLE = 200
_REASON_CHARS = 200
# What a broken file raises from pandas, the C parser, gzip or pyarrow.
_PARSE_ERRORS = (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, EOFError)


def load_dataset(source: str, rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """A data frame from ``builtin:NAME`` or a ``.csv``, ``.csv.gz``, ``.parquet`` or ``.pq`` file.

    For files, ``rows`` keeps a seeded random sample of that many rows, in file order.
    """
    if source.startswith(BUILTIN_PREFIX):
        return load_builtin(source.removeprefix(BUILTIN_PREFIX), rows=rows, seed=seed)
    path = Path(source).expanduser()
    reader = _reader_for(path)
    _check_exists(path)
    frame = reader(path)
    _check_frame(frame, path)
    return _sample(frame, rows, seed)


def fingerprint(frame: pd.DataFrame) -> str:
    """A sha256 of the content: column names, dtypes and every value, in row order.

    The index is left out, so the same rows loaded twice give the same fingerprint.
    """
    digest = hashlib.sha256()
    for name, dtype in frame.dtypes.items():
        digest.update(f"{name}\x1f{dtype}\x1e".encode())
    try:
        row_hashes = pd.util.hash_pandas_object(frame, index=False)
    except TypeError as exc:
        raise DataError(
            f"cannot fingerprint the data: {_reason(exc)}. Expected columns of numbers, strings, "
            "booleans or datetimes; convert other objects (lists, dicts) to strings first."
        ) from exc
    digest.update(row_hashes.to_numpy().tobytes())
    return digest.hexdigest()


def _reader_for(path: Path) -> Callable[[Path], pd.DataFrame]:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return _read_csv
    if name.endswith((".parquet", ".pq")):
        return _read_parquet
    raise DataError(
        f"unsupported data file {str(path)!r}: expected a file ending in "
        f"{', '.join(SUPPORTED_SUFFIXES)}, or builtin:NAME ({', '.join(BUILTIN_NAMES)}). "
        "Convert the file to CSV or Parquet, or rename it if it already is one."
    )


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(
            f"data file not found: {str(path)!r} (resolved to {str(path.absolute())!r}). "
            "Expected an existing CSV or Parquet file; check data.source, and note that "
            "relative paths are read from the current directory."
        )
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(
            f"data file {str(path)!r} is empty (0 bytes): expected a header row and data rows. "
            "Point data.source at a file with data."
        )


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0].tolist()
        _check_unique_names([name for name in header if isinstance(name, str)], path)
        frame = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(
            f"data file {str(path)!r} has no columns: expected a header row and data rows. "
            "Point data.source at a file with data."
        ) from exc
    except _PARSE_ERRORS as exc:
        raise _unparseable(path, "CSV", exc) from exc
    return _parse_datetimes(frame)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        if path.is_file():
            # pyarrow refuses repeated names with a cryptic message; name them ourselves first.
            _check_unique_names(pq.read_schema(path).names, path)
        frame = pd.read_parquet(path)
    except (pa.ArrowException, *_PARSE_ERRORS) as exc:
        raise _unparseable(path, "Parquet", exc) from exc
    _check_unique_names([str(name) for name in frame.columns], path)
    return frame


def _unparseable(path: Path, kind: str, exc: BaseException) -> DataError:
    return DataError(
        f"data file {str(path)!r} could not be parsed as {kind}: {_reason(exc)}. "
        f"Expected a valid {kind} file; check that the file is complete and really is {kind}."
    )


def _reason(exc: BaseException) -> str:
    """The parser's own short explanation, one line, without a traceback."""
    text = str(exc).strip().splitlines()
    reason = text[0].rstrip(".") if text else type(exc).__name__
    return reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 3] + "..."


def _check_unique_names(names: list[str], path: Path) -> None:
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise DataError(
            f"data file {str(path)!r} has duplicate column names: {repeated}. Expected every "
            "column name once; rename or remove the repeated columns."
        )


def _check_frame(frame: pd.DataFrame, path: Path) -> None:
    if len(frame.columns) == 0 or len(frame) == 0:
        raise DataError(
            f"data file {str(path)!r} has no rows (columns: {list(frame.columns)}): expected "
            "at least one data row. Point data.source at a file with data."
        )


def _sample(frame: pd.DataFrame, rows: int | None, seed: int) -> pd.DataFrame:
    if rows is None:
        return frame
    if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or rows < 1:
        raise DataError(
            f"rows must be a positive whole number or None (all rows); received {rows!r}. "
            "Set data.rows to e.g. 10000 or remove it."
        )
    if rows >= len(frame):
        return frame
    return frame.sample(n=rows, random_state=seed).sort_index().reset_index(drop=True)


def _parse_datetimes(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns whose values all look like ISO 8601 datetimes become datetime64[ns]."""
    for name in frame.columns:
        column = frame[name]
        if _is_string_column(column) and _looks_iso(column):
            parsed = _to_datetime(column)
            if parsed is not None:
                frame[name] = parsed
    return frame


def _is_string_column(column: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)


def _looks_iso(column: pd.Series) -> bool:
    values = column.dropna()
    if values.empty:
        return False
    sample = values.iloc[:: max(1, len(values) // _DATETIME_SAMPLE)]
    return all(isinstance(v, str) and _ISO_DATETIME.match(v.strip()) for v in sample)


def _to_datetime(column: pd.Series) -> pd.Series | None:
    """The parsed column as naive UTC datetime64[ns], or None when parsing loses values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # utc=True so mixed offsets parse; naive UTC compares with every other column.
            parsed = pd.to_datetime(column, format="ISO8601", errors="coerce", utc=True)
        except (ValueError, TypeError, OverflowError):
            return None
    if parsed.isna().sum() > column.isna().sum():
        return None
    return parsed.dt.tz_localize(None).astype("datetime64[ns]")
