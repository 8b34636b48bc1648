"""Requests to graph feeds: V2 tensors (one per column, or one 2-D tensor) and row records.

Everything is checked against the bundle's signature before the model runs; values outside
the training range and unseen categories are served and counted for monitoring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ferry.core.protocol import NUMERIC, decode_tensor, tensors_by_name
from ferry.core.signature import InputSpec, Signature, strings_with_missing
from ferry.errors import SignatureError

Feeds = dict[str, np.ndarray]


@dataclass
class InputQuality:
    """Per-input counts of what the model saw but was not trained on."""

    missing: dict[str, int] = field(default_factory=dict)
    out_of_range: dict[str, int] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)


def _epoch(name: str, value: object) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise SignatureError(
            f"input {name!r}: {value!r} is not a datetime; send ISO 8601 "
            "(2024-05-01T13:45:00Z) or epoch seconds"
        ) from None
    # Naive times are UTC, as in training (pandas.to_datetime(utc=True)).
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def _epochs(spec: InputSpec, values: list[object]) -> np.ndarray:
    # Through _numeric_column afterwards, so a null time is refused where training saw none.
    return np.asarray([_epoch(spec.name, v) for v in values], dtype=np.float64)


def _numeric_column(spec: InputSpec, array: np.ndarray) -> np.ndarray:
    dtype = np.float64 if spec.dtype == "float64" else np.float32
    column = array.astype(dtype, copy=False).reshape(-1, 1)
    if not spec.nullable and np.isnan(column).any():
        raise SignatureError(
            f"input {spec.name!r} holds null/NaN but this model was trained "
            "without missing values there; send a number"
        )
    return column


def _tensor_column(spec: InputSpec, tensor: Mapping[str, Any], max_elements: int) -> np.ndarray:
    datatype = tensor.get("datatype")
    array = decode_tensor(tensor, max_elements)
    if (array.ndim == 2 and array.shape[1] != 1) or array.ndim > 2:
        raise SignatureError(
            f"input {spec.name!r}: shape {list(array.shape)} is not a column; "
            "send shape [rows] or [rows, 1]"
        )
    if datatype == "BYTES":
        _check_text(spec, array)
    if spec.dtype == "string":
        if datatype != "BYTES":
            kind = "text" if spec.kind == "text" else "categorical"
            raise SignatureError(
                f"input {spec.name!r} is {kind}: send datatype BYTES (strings), not {datatype}"
            )
        if spec.kind == "text":
            return _texts(spec, array.reshape(-1).tolist())
        return strings_with_missing(array).reshape(-1, 1)
    if spec.kind == "datetime" and datatype == "BYTES":
        return _numeric_column(spec, _epochs(spec, array.reshape(-1).tolist()))
    if datatype not in NUMERIC and datatype != "BOOL":
        raise SignatureError(
            f"input {spec.name!r} is numeric: send datatype FP32 (or another "
            f"numeric type), not {datatype}"
        )
    return _numeric_column(spec, array)


def _check_text(spec: InputSpec, array: np.ndarray) -> None:
    """BYTES elements that were not UTF-8 reach here as bytes: only images take those."""
    flat = array.reshape(-1)
    binary = next((i for i, value in enumerate(flat) if isinstance(value, bytes)), None)
    if binary is not None:
        raise SignatureError(
            f"input {spec.name!r}: BYTES element {binary} is not valid UTF-8; send UTF-8 text"
        )


def _texts(spec: InputSpec, values: Sequence[object]) -> np.ndarray:
    """Text as sent, unlike categories: "" stays "" and null is the empty text too."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise SignatureError(
                f"input {spec.name!r}: row {i} holds {value!r:.40}, which is not text; "
                'send a string ("" for an empty text)'
            )
        out[i] = value or ""
    return out.reshape(-1, 1)


def _single_tensor(signature: Signature, tensor: Mapping[str, Any], max_elements: int) -> Feeds:
    specs = signature.inputs
    if any(s.dtype == "string" for s in specs):
        raise SignatureError(
            f"input {tensor.get('name')!r}: this model has text or categorical inputs, "
            "so send one tensor per column (named "
            f"{[s.name for s in specs]}) instead of one 2-D tensor"
        )
    array = decode_tensor(tensor, max_elements)
    if array.ndim != 2 or array.shape[1] != len(specs):
        raise SignatureError(
            f"input {tensor.get('name')!r}: shape {list(array.shape)} should be "
            f"[rows, {len(specs)}] with columns in signature order "
            f"{[s.name for s in specs]}"
        )
    return {s.name: _numeric_column(s, array[:, [i]]) for i, s in enumerate(specs)}


def _rows(feeds: Feeds) -> int:
    counts = {name: len(a) for name, a in feeds.items()}
    if len(set(counts.values())) > 1:
        raise SignatureError(
            f"inputs have different row counts {counts}; send the same number "
            "of rows for every input"
        )
    return next(iter(counts.values()), 0)


def feeds_from_tensors(
    signature: Signature, inputs: object, max_elements: int = 10_000_000
) -> tuple[Feeds, int]:
    if not isinstance(inputs, list) or not inputs:
        raise SignatureError("'inputs' must be a non-empty list of tensors")
    by_name = tensors_by_name(inputs)
    expected = signature.input_names()
    if len(by_name) == 1 and len(expected) > 1 and next(iter(by_name)) not in expected:
        feeds = _single_tensor(signature, next(iter(by_name.values())), max_elements)
        return feeds, _rows(feeds)
    missing = [n for n in expected if n not in by_name]
    unknown = [n for n in by_name if n not in expected]
    if missing or unknown:
        raise SignatureError(
            f"inputs do not match the model: missing {missing}, unknown {unknown}; send one "
            f"tensor per input named {expected} (or one [rows, {len(expected)}] FP32 tensor)"
        )
    feeds = {s.name: _column(s, by_name[s.name], max_elements) for s in signature.inputs}
    return feeds, _rows(feeds)


# Datatypes whose flat JSON lists numpy reads exactly as the full decoder would, and the array
# kinds that may come out of them; anything else takes the full path with its error messages.
_FAST_KINDS = {"FP32": "fi", "FP64": "fi", "INT32": "i", "INT64": "i", "BOOL": "b"}


def _column(spec: InputSpec, tensor: Mapping[str, Any], max_elements: int) -> np.ndarray:
    fast = _fast_column(spec, tensor, max_elements)
    return fast if fast is not None else _tensor_column(spec, tensor, max_elements)


def _fast_column(
    spec: InputSpec, tensor: Mapping[str, Any], max_elements: int
) -> np.ndarray | None:
    """The common case (a flat list of plain numbers, shape [n] or [n, 1]) in one numpy call:
    the full decoder costs several times more for one-value columns."""
    data, shape = tensor.get("data"), tensor.get("shape")
    kinds = _FAST_KINDS.get(str(tensor.get("datatype")))
    if kinds is None or spec.dtype == "string" or not isinstance(data, list):
        return None
    n = len(data)
    # ``type(...) is int``: [1.0] == [1] in Python, but a float shape is an error to report.
    if (
        not 0 < n <= max_elements
        or shape not in ([n], [n, 1])
        or any(type(d) is not int for d in shape)
    ):
        return None
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):  # ragged or odd data: the full decoder says what is wrong
        return None
    if array.dtype.kind not in kinds or array.ndim != 1:
        return None
    return _numeric_column(spec, array)


def _record_value(spec: InputSpec, index: int, record: Mapping[str, Any]) -> object:
    if spec.name in record:
        return record[spec.name]
    if spec.kind == "text":  # an absent review is more likely a client bug than an empty one
        raise SignatureError(
            f'instance {index} is missing {spec.name!r}, which this model needs; send a string ("" '
            "for an empty text)"
        )
    if spec.nullable or spec.dtype == "string":
        return None
    raise SignatureError(f"instance {index} is missing {spec.name!r}, which this model needs")


def _record_column(spec: InputSpec, values: list[object]) -> np.ndarray:
    if spec.kind == "text":
        return _texts(spec, values)
    if spec.dtype == "string":
        return strings_with_missing(values).reshape(-1, 1)
    if spec.kind == "datetime":
        return _numeric_column(spec, _epochs(spec, values))
    for i, value in enumerate(values):
        if isinstance(value, str | list | dict):
            raise SignatureError(f"instance {i}: {spec.name!r} is {value!r}; send a number")
    converted = [float(v) if isinstance(v, bool) else v for v in values]
    return _numeric_column(spec, np.asarray(converted, dtype=np.float64))


def feeds_from_records(signature: Signature, instances: object) -> tuple[Feeds, int]:
    if not isinstance(instances, list) or not instances:
        raise SignatureError("'instances' must be a non-empty list of objects")
    expected = set(signature.input_names())
    for i, record in enumerate(instances):
        if not isinstance(record, Mapping):
            raise SignatureError(f"instance {i} must be an object of column: value")
        unknown = sorted(set(record) - expected)
        if unknown:
            raise SignatureError(
                f"instance {i} has unknown field(s) {unknown}; the model takes "
                f"{signature.input_names()}"
            )
    feeds = {
        s.name: _record_column(s, [_record_value(s, i, r) for i, r in enumerate(instances)])
        for s in signature.inputs
    }
    return feeds, len(instances)


def measure_quality(signature: Signature, feeds: Feeds) -> InputQuality:
    quality = InputQuality()
    for spec in signature.inputs:
        column = feeds[spec.name]
        if spec.kind == "text":  # no categories to be unseen; an empty text counts as missing
            quality.missing[spec.name] = int((column == "").sum())
            continue
        if spec.dtype == "string":
            known = spec.categories or []
            quality.unseen[spec.name] = int((~np.isin(column, [*known, "__missing__"])).sum())
            quality.missing[spec.name] = int((column == "__missing__").sum())
            continue
        quality.missing[spec.name] = int(np.isnan(column).sum())
        low = -np.inf if spec.min is None else spec.min
        high = np.inf if spec.max is None else spec.max
        quality.out_of_range[spec.name] = int(((column < low) | (column > high)).sum())
    return quality


def concat(batches: Sequence[Feeds]) -> Feeds:
    if len(batches) == 1:
        return batches[0]
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
