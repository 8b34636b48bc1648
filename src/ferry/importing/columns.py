"""Which inputs an imported model's bundle takes: names and kinds, from the best source at hand.

Names come from ``--signature``, else from the model (``feature_names_in_``, a booster's feature
names), else from the sample's columns when the model's features are unnamed, else from the
model's own generic names. Kinds come from the signature, else from what the model says (a
pipeline's encoders), else from the sample's columns, else numeric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import cast

import pandas as pd

from ferry.core.signature import Dtype, InputSpec, Kind
from ferry.data.schema import infer_schema
from ferry.errors import DataError, ExportError

TABULAR_KINDS = ("numeric", "boolean", "datetime", "categorical")
# Names a library gives features it was not told the names of.
GENERIC_NAME = re.compile(r"^(Column_\d+|f\d+|x\d+)$")
UNNAMED = "unnamed feature"  # the description of inputs named by position


@dataclass
class Hints:
    """What the user gave besides the model: ``--signature`` and the ``--sample``'s features."""

    signature: list[InputSpec] | None = None
    sample: pd.DataFrame | None = None
    kinds: dict[str, str] = field(default_factory=dict)  # what the model says about columns


def spec_for(name: str, kind: str, *, nullable: bool) -> InputSpec:
    dtypes: dict[str, Dtype] = {"categorical": "string", "datetime": "float64"}
    chosen = cast(Kind, kind if kind in TABULAR_KINDS else "numeric")
    dtype = dtypes.get(chosen, "float32")
    return InputSpec(
        name=name, dtype=dtype, kind=chosen, nullable=nullable or kind == "categorical"
    )


def sample_kinds(frame: pd.DataFrame) -> dict[str, str]:
    """Each column's kind as training would type it; ids and free text count by their dtype."""
    kinds: dict[str, str] = {}
    for info in infer_schema(frame):
        kind = info.kind
        if kind not in TABULAR_KINDS:
            numeric = pd.api.types.is_numeric_dtype(frame[info.name])
            kind = "numeric" if numeric else "categorical"
        kinds[info.name] = kind
    return kinds


def tabular(specs: list[InputSpec]) -> list[InputSpec]:
    """Inputs a server can feed as columns; numbers go in as float32 like training's."""
    checked = []
    for spec in specs:
        if spec.kind not in TABULAR_KINDS:
            raise ExportError(
                f"--signature input {spec.name!r} has kind {spec.kind!r}; imported models take "
                f"tabular inputs, one of {list(TABULAR_KINDS)}"
            )
        if spec.kind != "categorical" and spec.dtype not in ("float32", "float64"):
            spec = spec.model_copy(update={"dtype": "float32"})
        if spec.kind == "categorical":
            spec = spec.model_copy(update={"dtype": "string", "nullable": True})
        checked.append(spec)
    return checked


def _names_from_sample(sample: pd.DataFrame, count: int) -> list[str]:
    columns = [str(c) for c in sample.columns]
    if len(columns) != count:
        raise DataError(
            f"the model takes {count} unnamed features but --sample has {len(columns)} columns "
            f"besides --target ({columns[:8]}{'...' if len(columns) > 8 else ''}); pass "
            "--signature sig.json naming the model's inputs in order"
        )
    return columns


def plan_inputs(
    model_names: list[str] | None, count: int, hints: Hints, *, nullable: bool, generic: str
) -> list[InputSpec]:
    """The bundle's inputs for a model of ``count`` features."""
    if hints.signature is not None:
        if len(hints.signature) != count:
            raise ExportError(
                f"--signature lists {len(hints.signature)} inputs but the model takes {count} "
                "features; list every feature, in the order the model takes them"
            )
        return tabular(hints.signature)
    named = bool(model_names) and not all(GENERIC_NAME.match(n) for n in model_names or [])
    if named:
        names = list(model_names or [])
    elif hints.sample is not None:
        names = _names_from_sample(hints.sample, count)
    else:
        return _unnamed(model_names or [f"{generic}{i}" for i in range(count)], nullable)
    kinds = sample_kinds(hints.sample) if hints.sample is not None else {}
    kinds.update(hints.kinds)
    return [spec_for(n, kinds.get(n, "numeric"), nullable=nullable) for n in names]


def _unnamed(names: list[str], nullable: bool) -> list[InputSpec]:
    specs = [spec_for(n, "numeric", nullable=nullable) for n in names]
    for i, spec in enumerate(specs):
        spec.description = f"{UNNAMED} {i}: the model names no features; send it in this position"
    return specs


def is_unnamed(spec: InputSpec) -> bool:
    return spec.description is not None and spec.description.startswith(UNNAMED)
