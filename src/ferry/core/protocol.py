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
NUMERIC = frozenset(DATATYPES) - {"BYTES", "BOOL"}

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
    count = math.prod(shape)
    if count > max_elements:
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
        return np.asarray(values, dtype=np.float64 if dtype.kind == "f" else None).astype(dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        sample = next((v for v in values if not isinstance(v, int | float)), values[:1])
        raise SignatureError(
            f"input {name!r}: {datatype} tensor holds {sample!r}, which is not "
            "a number; send numbers (null only where the model allows missing)"
        ) from exc


def _bytes(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value.decode() if isinstance(value, bytes) else value
    return out


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
    values = _flatten(name, tensor.get("data"), count)
    if len(values) != count:
        raise SignatureError(
            f"input {name!r}: shape {list(shape)} needs {count} values, data has {len(values)}"
        )
    if datatype == "BYTES":
        array = _bytes(values)
    elif datatype == "BOOL":
        array = np.asarray(values, dtype=np.bool_)
    else:
        array = _numeric(name, values, datatype)
    return array.reshape(shape)


def encode_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = datatype_of(array)
    data = array.reshape(-1)
    values = data.tolist() if datatype != "FP16" else data.astype(np.float32).tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": values}


def tensors_by_name(tensors: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    by_name: dict[str, Mapping[str, Any]] = {}
    for tensor in tensors:
        if not isinstance(tensor, Mapping) or "name" not in tensor:
            raise SignatureError("each input must be an object with name, shape, datatype, data")
        if tensor["name"] in by_name:
            raise SignatureError(f"input {tensor['name']!r} is given twice; send it once")
        by_name[str(tensor["name"])] = tensor
    return by_name
