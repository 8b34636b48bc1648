"""Batch-scoring fixtures: small bundles trained once by the lab, unseen rows, and the answer
the serving runtime gives for those rows (the reference every scored file must match)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ferry.core.signature import InputSpec
from ferry.core.spec import parse_spec
from ferry.data.builtin import load_builtin
from ferry.data.fraud import fraud
from ferry.lab import train
from ferry.serving.batching import BatchConfig
from ferry.serving.inputs import feeds_from_records
from ferry.serving.model import LoadedModel

FAST_SEARCH = {"trials": 1, "time_budget_s": 20, "folds": 2}
SPECS: dict[str, dict[str, Any]] = {
    "fraud": {
        "name": "fraud",
        "task": "classification",
        "data": {"source": "builtin:fraud", "target": "is_fraud", "rows": 3000},
        "search": {"families": ["logistic"], **FAST_SEARCH},
    },
    "trees": {  # a tree ensemble: what ferry predict compiles
        "name": "fraud",
        "task": "classification",
        "data": {"source": "builtin:fraud", "target": "is_fraud", "rows": 4000},
        "search": {"families": ["hist_gb"], **FAST_SEARCH},
    },
    "diabetes": {
        "name": "diabetes",
        "task": "regression",
        "data": {"source": "builtin:diabetes", "target": "target"},
        "search": {"families": ["linear"], "metric": "rmse", **FAST_SEARCH},
    },
}

Reference = Callable[[Path, pd.DataFrame], dict[str, np.ndarray]]


def _train(tmp_path_factory: pytest.TempPathFactory, key: str) -> Path:
    return train(parse_spec(SPECS[key]), tmp_path_factory.mktemp(f"lab-{key}")).bundle_dir


@pytest.fixture(scope="session")
def fraud_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory, "fraud")


@pytest.fixture(scope="session")
def trees_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory, "trees")


@pytest.fixture(scope="session")
def diabetes_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory, "diabetes")


@pytest.fixture(scope="session")
def fraud_rows() -> pd.DataFrame:
    """Transactions of another seed than training's, target column included (passed through)."""
    return fraud(rows=5000, seed=11)


@pytest.fixture(scope="session")
def diabetes_rows() -> pd.DataFrame:
    return load_builtin("diabetes").drop(columns=["target"])


def _json_value(spec: InputSpec, value: Any) -> Any:
    """A raw cell as a client would send it in a JSON record."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if spec.kind == "datetime":
        return pd.Timestamp(value).isoformat()
    if spec.kind == "boolean":
        return bool(value)
    if spec.dtype == "string":
        return str(value)
    return float(value)


def served(bundle: Path, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """What the server answers for these rows: its record decoding, graph run and decision."""
    model = LoadedModel(bundle, 1, BatchConfig(enabled=False))
    specs = model.manifest.signature.inputs
    records = [{s.name: _json_value(s, row[s.name]) for s in specs} for _, row in frame.iterrows()]
    feeds, _ = feeds_from_records(model.manifest.signature, records)
    outputs = model.runtime.run(feeds)
    if model.manifest.task == "regression":
        return {"prediction": next(iter(outputs.values())).reshape(-1)}
    return {"prediction": model.decide(outputs), "probabilities": outputs["probabilities"]}


@pytest.fixture(scope="session")
def reference() -> Reference:
    return served
