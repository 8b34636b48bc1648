"""Arrow record batches to graph feeds, one column at a time, without pandas on the hot path.

The feeds are what the lab gave the graph at export (``training.features.model_frame``):
numeric and boolean columns as FP32 ``[n, 1]``, datetimes as FP64 epoch seconds (UTC; naive
times are UTC), categoricals as strings with missing values spelled ``MISSING_CATEGORY``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ferry.core.signature import MISSING_CATEGORY, InputSpec, Signature, strings_with_missing
from ferry.errors import SignatureError

Feeds = dict[str, np.ndarray]

# The words training reads as true (training.features.TRUE_WORDS); importing that module here
# would pull scikit-learn into a serving install.
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t"})
_NS_PER_UNIT = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_NAT = np.iinfo(np.int64).min  # numpy's NaT: null times become NaN seconds


def batch_feeds(
    signature: Signature,
    batch: pa.RecordBatch,
    first_row: int = 0,
    codes: Mapping[str, list[str]] | None = None,
) -> Feeds:
    """Feeds for every graph input; ``first_row`` numbers rows in error messages. Inputs named
    in ``codes`` are given as positions in their category list (``category_codes``)."""
    codes = codes or {}
    return {
        spec.name: category_codes(batch.column(spec.name), codes[spec.name])
        if spec.name in codes
        else column_feed(spec, batch.column(spec.name), first_row)
        for spec in signature.inputs
    }


def column_feed(spec: InputSpec, column: pa.Array, first_row: int = 0) -> np.ndarray:
    if spec.dtype == "string":
        return categories(column).reshape(-1, 1)
    if pa.types.is_dictionary(column.type):  # text read as a dictionary: numbers, times, flags
        column = column.dictionary_decode()
    if spec.kind == "datetime":
        values = _epoch_seconds(spec, column)
    elif spec.kind == "boolean":
        values = _booleans(column)
    else:
        values = _numbers(spec, column)
    values = values.astype(np.float64 if spec.dtype == "float64" else np.float32, copy=False)
    _check_nulls(spec, values, first_row)
    return values.reshape(-1, 1)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def categories(column: pa.Array) -> np.ndarray:
    """Strings as an object array; null and "" become ``MISSING_CATEGORY``.

    Each distinct value is turned into a Python string once and shared by its rows: the cost
    is a dictionary encode in Arrow plus one numpy take.
    """
    encoded = _dictionary(column)
    if encoded is None:  # numbers or booleans held as categories: spelled as training did (str())
        return strings_with_missing(column.to_numpy(zero_copy_only=False))
    names = strings_with_missing(encoded.dictionary.to_numpy(zero_copy_only=False))
    lookup = np.append(names, np.asarray([MISSING_CATEGORY], dtype=object))
    codes = pc.fill_null(encoded.indices, len(names)).to_numpy(zero_copy_only=False)
    return lookup[codes]


def category_codes(column: pa.Array, known: list[str]) -> np.ndarray:
    """int64 [n, 1]: each value's position in ``known``, -1 when it is not there; values are
    spelled as ``categories`` spells them, so a code means what the text would have meant.
    Only the distinct values are looked up, so no Python string is made per row."""
    positions = {category: i for i, category in enumerate(known)}
    missing = positions.get(MISSING_CATEGORY, -1)
    encoded = _dictionary(column)
    if encoded is None:  # numbers or booleans held as categories: rare, so row by row
        texts = categories(column)
        return np.asarray([positions.get(t, -1) for t in texts], dtype=np.int64).reshape(-1, 1)
    names = strings_with_missing(encoded.dictionary.to_numpy(zero_copy_only=False))
    lookup = np.asarray([*(positions.get(name, -1) for name in names), missing], dtype=np.int64)
    indices = pc.fill_null(encoded.indices, len(names)).to_numpy(zero_copy_only=False)
    return lookup[indices].reshape(-1, 1)


def _dictionary(column: pa.Array) -> pa.DictionaryArray | None:
    """Text as a dictionary array; None for a column that is not text."""
    if pa.types.is_dictionary(column.type) and _is_text(column.type.value_type):
        return column
    if _is_text(column.type) or pa.types.is_string_view(column.type):
        return pc.dictionary_encode(column.cast(pa.large_string()))
    return None


def _numbers(spec: InputSpec, column: pa.Array) -> np.ndarray:
    kind = column.type
    target = pa.float64() if spec.dtype == "float64" else pa.float32()
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    if numeric or pa.types.is_boolean(kind) or pa.types.is_null(kind):
        # safe=False: an int64 beyond 2**24 rounds to float32 as numpy rounds it in training.
        return column.cast(target, safe=False).to_numpy(zero_copy_only=False)
    if _is_text(kind) or pa.types.is_string_view(kind):
        return _parsed_numbers(spec, column, target)
    raise SignatureError(
        f"column {spec.name!r} has type {kind}, but the model needs numbers there; "
        "convert the column to numbers (integers or floats)"
    )


def _parsed_numbers(spec: InputSpec, column: pa.Array, target: pa.DataType) -> np.ndarray:
    try:
        return column.cast(target, safe=False).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        sample = [v for v in column.to_pylist() if v is not None and not _is_number(v)][:3]
        raise SignatureError(
            f"column {spec.name!r} holds text such as {sample!r}, but the model needs numbers "
            "there; fix those values (leave them empty for missing)"
        ) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _booleans(column: pa.Array) -> np.ndarray:
    kind = column.type
    if _is_text(kind) or pa.types.is_string_view(kind):
        words = pc.utf8_lower(pc.utf8_trim_whitespace(column.cast(pa.large_string())))
        truth = pc.is_in(words, value_set=pa.array(sorted(TRUE_WORDS), pa.large_string()))
        column = pc.if_else(pc.is_null(column), pa.scalar(None, pa.bool_()), truth)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        column = pc.equal(column, 1)
    return column.cast(pa.float32(), safe=False).to_numpy(zero_copy_only=False)


def _epoch_seconds(spec: InputSpec, column: pa.Array) -> np.ndarray:
    kind = column.type
    if pa.types.is_date(kind):
        column, kind = column.cast(pa.timestamp("s")), pa.timestamp("s")
    if pa.types.is_timestamp(kind):
        return _seconds(column.cast(pa.int64()), _NS_PER_UNIT[kind.unit])
    if _is_text(kind) or pa.types.is_string_view(kind):
        return _parsed_times(spec, column)
    if pa.types.is_null(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return column.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    raise SignatureError(
        f"column {spec.name!r} has type {kind}, but the model needs a datetime there; "
        "store timestamps, ISO 8601 text (2024-05-01T13:45:00Z) or epoch seconds"
    )


def _seconds(ticks: pa.Array, ns_per_tick: int) -> np.ndarray:
    """Seconds since the epoch, computed by pandas' own ``total_seconds`` on nanoseconds as
    training computes them (``features.epoch_seconds``), so they agree to the last bit."""
    import pandas as pd

    nanoseconds = pc.multiply_checked(ticks, ns_per_tick) if ns_per_tick != 1 else ticks
    values = pc.fill_null(nanoseconds, _NAT).to_numpy(zero_copy_only=False)
    return np.asarray(pd.array(values.view("m8[ns]")).total_seconds(), dtype=np.float64)


def _parsed_times(spec: InputSpec, column: pa.Array) -> np.ndarray:
    """ISO 8601 text, as the lab reads it from CSV; Arrow parses the usual shapes quickly."""
    for target in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):
        try:
            return _seconds(column.cast(target).cast(pa.int64()), 1)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    import pandas as pd  # mixed offsets and other rare shapes

    texts = pd.Series(column.to_pylist(), dtype=object)
    stamps = pd.to_datetime(texts, format="ISO8601", utc=True, errors="coerce")
    bad = texts[stamps.isna() & texts.notna()]
    if len(bad):
        raise SignatureError(
            f"column {spec.name!r} holds text that is not an ISO 8601 datetime, such as "
            f"{bad.iloc[:3].tolist()!r}; write 2024-05-01T13:45:00Z (or epoch seconds)"
        )
    nanoseconds = stamps.dt.tz_localize(None).astype("datetime64[ns]")
    return _seconds(pa.array(nanoseconds).cast(pa.int64()), 1)


def _check_nulls(spec: InputSpec, values: np.ndarray, first_row: int) -> None:
    if spec.nullable:
        return
    missing = np.isnan(values)
    if missing.any():
        row = first_row + int(np.argmax(missing)) + 1
        raise SignatureError(
            f"column {spec.name!r} is empty or not a number at data row {row} "
            f"({int(missing.sum())} such rows in that chunk), but the model was trained "
            "without missing values there; fill those values or drop those rows"
        )
