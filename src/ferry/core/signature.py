"""Typed model inputs and outputs, and the check that says exactly what is wrong with a batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from ferry.errors import SignatureError

Dtype = Literal["float32", "float64", "int64", "string", "bool"]
# "image": a float32 [-1, C, H, W] input that servers also fill from PNG/JPEG bytes.
Kind = Literal["numeric", "categorical", "boolean", "datetime", "text", "tensor", "image"]

# Categorical inputs carry missing values as this category, so the graph needs no string imputer.
MISSING_CATEGORY = "__missing__"

NUMPY_DTYPES: dict[str, type] = {
    "float32": np.float32,
    "float64": np.float64,
    "int64": np.int64,
    "bool": np.bool_,
    "string": np.object_,
}


class InputSpec(BaseModel):
    """One graph input. Tabular bundles have one ``[-1, 1]`` input per column."""

    name: str
    dtype: Dtype
    kind: Kind = "numeric"
    shape: list[int] = Field(default_factory=lambda: [-1, 1])
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    description: str | None = None


class OutputSpec(BaseModel):
    name: str
    dtype: Dtype
    shape: list[int]


class Signature(BaseModel):
    inputs: list[InputSpec]
    outputs: list[OutputSpec]

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise SignatureError(f"unknown input {name!r}: expected one of {self.input_names()}")

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]


def _check_names(signature: Signature, batch: Mapping[str, object]) -> None:
    expected = signature.input_names()
    missing = [name for name in expected if name not in batch]
    unknown = [name for name in batch if name not in expected]
    if missing:
        raise SignatureError(f"missing input(s) {missing}: the model needs every one of {expected}")
    if unknown:
        raise SignatureError(f"unknown input(s) {unknown}: the model accepts only {expected}")


def _coerce(spec: InputSpec, values: object) -> np.ndarray:
    target = NUMPY_DTYPES[spec.dtype]
    array = np.asarray(values)
    if spec.dtype == "string":
        return strings_with_missing(array).reshape(-1, 1)
    try:
        return array.astype(target).reshape(-1, 1)
    except (TypeError, ValueError) as exc:
        sample = array.reshape(-1)[:3].tolist()
        raise SignatureError(
            f"input {spec.name!r}: expected {spec.dtype} values, received {sample!r}; "
            f"send numbers for this input"
        ) from exc


def strings_with_missing(values: object) -> np.ndarray:
    """Strings as an object array, with None/NaN/empty replaced by ``MISSING_CATEGORY``."""
    array = np.asarray(values, dtype=object).reshape(-1)
    out = np.empty(array.shape[0], dtype=object)
    for i, value in enumerate(array):
        missing = value is None or value == "" or (isinstance(value, float) and value != value)
        out[i] = MISSING_CATEGORY if missing else str(value)
    return out


def _check_nulls(spec: InputSpec, array: np.ndarray) -> None:
    if spec.nullable or spec.dtype not in ("float32", "float64"):
        return
    if np.isnan(array).any():
        raise SignatureError(
            f"input {spec.name!r} is not nullable but holds NaN/null; send a number"
        )


def validate_columns(signature: Signature, batch: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Check a column batch against the signature; return ``[n, 1]`` arrays in graph dtypes."""
    _check_names(signature, batch)
    arrays: dict[str, np.ndarray] = {}
    rows: int | None = None
    for spec in signature.inputs:
        array = _coerce(spec, batch[spec.name])
        _check_nulls(spec, array)
        if rows is not None and array.shape[0] != rows:
            raise SignatureError(
                f"input {spec.name!r} has {array.shape[0]} rows but earlier inputs have {rows}; "
                "send the same number of rows for every input"
            )
        rows = array.shape[0]
        arrays[spec.name] = array
    return arrays
