"""Open Inference Protocol (V2) tensors: datatypes, and JSON <-> numpy codecs.

Decoding checks the declared shape against the element count before anything is allocated,
so a request cannot make the server reserve memory it did not send.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ferry.errors import SignatureError

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_NONE = object()  # "no offending value found", distinct from a JSON null
NUMERIC = frozenset(DATATYPES) - {"BYTES", "BOOL"}
# numpy cannot hold more dimensions than this; a deeper declared shape is a client error.
MAX_DIMS = 32

SIGNATURE_DATATYPE = {
    "float32": "FP32",
    "float64": "FP64",
    "int64": "INT64",
    "bool": "BOOL",
    "string": "BYTES",
}


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if dtype == array.dtype:
            return name
    raise SignatureError(f"numpy dtype {array.dtype} has no V2 datatype")


def _shape(name: str, shape: object, max_elements: int) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise SignatureError(f"input {name!r}: shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise SignatureError(
            f"input {name!r}: shape {list(shape)} has a negative dimension; send the actual sizes"
        )
    if len(shape) > MAX_DIMS:
        raise SignatureError(
            f"input {name!r}: shape has {len(shape)} dimensions, more than the limit of {MAX_DIMS}"
        )
    count = math.prod(shape)
    # Each dimension is bounded too: [0, 10**30] holds no elements but numpy cannot make it.
    if count > max_elements or any(d > max_elements for d in shape):
        raise SignatureError(
            f"input {name!r}: shape {list(shape)} declares {count} elements, "
            f"more than the limit of {max_elements}"
        )
    return tuple(shape)


def _flatten(name: str, data: object, count: int) -> list[Any]:
    if not isinstance(data, list):
        return [data] if count == 1 else _bad_data(name, data)
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    stack: list[Any] = [data]
    while stack:  # iterative: nesting depth cannot exhaust the Python stack
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _bad_data(name: str, data: object) -> list[Any]:
    raise SignatureError(
        f"input {name!r}: data must be a list of values, got {type(data).__name__}"
    )


def _numeric(name: str, values: list[Any], datatype: str) -> np.ndarray:
    dtype = DATATYPES[datatype]
    for value in values[:1] + values[-1:]:
        if isinstance(value, str):
            raise SignatureError(
                f"input {name!r}: {datatype} tensor holds the string {value!r}; send numbers"
            )
    try:
        # JSON numbers are doubles: parse as such, then round once to the declared type
        # (numpy refuses out-of-range integers when given the integer dtype directly).
        array = np.asarray(values, dtype=np.float64 if dtype.kind == "f" else dtype)
        return array.astype(dtype, copy=False)
    except (TypeError, ValueError, OverflowError) as exc:
        sample = next((v for v in values if not isinstance(v, int | float)), values[:1])
        raise SignatureError(
            f"input {name!r}: {datatype} tensor holds {sample!r}, which is not "
            "a number; send numbers (null only where the model allows missing)"
        ) from exc


def _bool(name: str, values: list[Any]) -> np.ndarray:
    # numpy would read "false", null and 2 as booleans without a word: only true/false pass.
    wrong = next((v for v in values if not isinstance(v, bool)), _NONE)
    if wrong is not _NONE:
        raise SignatureError(
            f"input {name!r}: BOOL tensor holds {wrong!r}; send true or false "
            "(or FP32 with null where a value is missing)"
        )
    return np.asarray(values, dtype=np.bool_)


def _bytes(name: str, values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if isinstance(value, list | dict):  # ragged nesting or an object: not one string
            raise SignatureError(
                f"input {name!r}: BYTES tensor holds {type(value).__name__} {value!r:.40}; "
                "send one string per element"
            )
        out[i] = _text_or_bytes(value) if isinstance(value, bytes) else value
    return out


def _text_or_bytes(value: bytes) -> str | bytes:
    try:
        return value.decode()
    except UnicodeDecodeError:  # binary payloads (encoded images): string inputs refuse them
        return value


def decode_tensor(tensor: Mapping[str, Any], max_elements: int = 10_000_000) -> np.ndarray:
    """One V2 request tensor (JSON form) to a numpy array of its declared shape and datatype."""
    name = str(tensor.get("name", "?"))
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise SignatureError(
            f"input {name!r}: unknown datatype {datatype!r}; use one of {sorted(DATATYPES)}"
        )
    shape = _shape(name, tensor.get("shape"), max_elements)
    count = math.prod(shape)
    if isinstance(tensor.get("data"), np.ndarray):  # gRPC raw contents: no list round trip
        return _from_array(name, tensor["data"], shape, datatype)
    values = _flatten(name, tensor.get("data"), count)
    if len(values) != count:
        raise SignatureError(
            f"input {name!r}: shape {list(shape)} needs {count} values, data has {len(values)}"
        )
    if datatype == "BYTES":
        array = _bytes(name, values)
    elif datatype == "BOOL":
        array = _bool(name, values)
    else:
        array = _numeric(name, values, datatype)
    return array.reshape(shape)


def _from_array(name: str, data: np.ndarray, shape: tuple[int, ...], datatype: str) -> np.ndarray:
    if data.size != math.prod(shape):
        raise SignatureError(
            f"input {name!r}: shape {list(shape)} needs {math.prod(shape)} "
            f"values, data has {data.size}"
        )
    return data.reshape(shape).astype(DATATYPES[datatype], copy=False)


def encode_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = datatype_of(array)
    data = array.reshape(-1)
    values = data.tolist() if datatype != "FP16" else data.astype(np.float32).tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": values}


def tensors_by_name(tensors: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    by_name: dict[str, Mapping[str, Any]] = {}
    for tensor in tensors:
        if not isinstance(tensor, Mapping) or not isinstance(tensor.get("name"), str):
            raise SignatureError(
                "each input must be an object with a string name, shape, datatype and data"
            )
        if tensor["name"] in by_name:
            raise SignatureError(f"input {tensor['name']!r} is given twice; send it once")
        by_name[str(tensor["name"])] = tensor
    return by_name
