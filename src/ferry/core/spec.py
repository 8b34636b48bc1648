"""The ``ferry.yaml`` schema. A wrong key or value fails at start with the key named and the fix."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ferry.core.refs import check_name
from ferry.errors import RefError, SpecError

FAMILIES = ("logistic", "linear", "extra_trees", "random_forest", "hist_gb", "lightgbm", "mlp")
CLASSIFICATION_METRICS = (
    "roc_auc",
    "pr_auc",
    "f1",
    "accuracy",
    "balanced_accuracy",
    "log_loss",
    "precision",
    "recall",
)
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    source: str = Field(description="CSV/Parquet path, or builtin:NAME")
    target: str
    rows: int | None = Field(default=None, gt=0, description="Rows for builtin generators")
    drop: list[str] = Field(default_factory=list)
    sensitive: list[str] = Field(default_factory=list, description="Kept out of the features")


class SplitSpec(_Strict):
    test_size: float = Field(default=0.2, gt=0, lt=0.9)
    valid_size: float = Field(default=0.1, ge=0, lt=0.9)
    time_column: str | None = Field(default=None, description="Split by time instead of random")
    seed: int = 0


class FeatureSpec(_Strict):
    impute: Literal["median", "mean"] = "median"
    missing_indicators: bool = True
    clip_quantiles: tuple[float, float] | None = (0.005, 0.995)
    encoding: Literal["onehot", "ordinal"] = "onehot"
    max_categories: int = Field(default=30, ge=2)
    scale: bool = True
    pca_components: int | float | None = None
    interactions: bool = False


class SearchSpec(_Strict):
    families: list[str] = Field(default_factory=lambda: ["logistic", "hist_gb", "lightgbm"])
    metric: str | None = None
    folds: int = Field(default=3, ge=2, le=20)
    trials: int = Field(default=20, ge=1)
    time_budget_s: float = Field(default=120, gt=0)
    seed: int = 0
    class_weight: Literal["balanced", "none"] = "balanced"


class ConstraintsSpec(_Strict):
    max_latency_p99_ms: float | None = Field(default=None, gt=0)
    max_size_mb: float | None = Field(default=None, gt=0)


class ThresholdSpec(_Strict):
    strategy: Literal["f1", "recall"] = "f1"
    recall_target: float | None = Field(default=None, gt=0, le=1)


class GatesSpec(_Strict):
    min: dict[str, float] = Field(default_factory=dict, description="metric >= value")
    max: dict[str, float] = Field(default_factory=dict, description="metric <= value")
    max_fairness_gap: float | None = Field(default=None, ge=0, le=1)


class Spec(_Strict):
    name: str
    task: Literal["classification", "regression"]
    data: DataSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    constraints: ConstraintsSpec = Field(default_factory=ConstraintsSpec)
    threshold: ThresholdSpec = Field(default_factory=ThresholdSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    # Later subsystems (monitoring, retraining) add their sections; keep them optional.
    monitoring: dict[str, Any] = Field(default_factory=dict)
    retraining: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Spec:
        try:
            check_name(self.name)
        except RefError as exc:
            raise ValueError(f"name: {exc}") from None
        unknown = [f for f in self.search.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"search.families: unknown {unknown}; choose from {list(FAMILIES)}")
        self.search.metric = self.search.metric or self.default_metric()
        allowed = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        if self.search.metric not in allowed:
            raise ValueError(
                f"search.metric: {self.search.metric!r} does not fit task {self.task!r}; "
                f"choose from {list(allowed)}"
            )
        for gate in (*self.gates.min, *self.gates.max):
            if gate not in allowed:
                raise ValueError(f"gates: unknown metric {gate!r}; choose from {list(allowed)}")
        return self

    def default_metric(self) -> str:
        return "roc_auc" if self.task == "classification" else "rmse"

    def spec_hash(self) -> str:
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _format_error(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key; remove it or check its spelling (see `ferry init`)"
    if error["type"] == "missing":
        return f"{key}: required key is missing; add it"
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # whole-spec checks name their own key
        return message
    received = error.get("input")
    if isinstance(received, dict | list):
        return f"{key}: {message}"
    return f"{key}: {message} (received {received!r})"


def parse_spec(data: object, origin: str = "ferry.yaml") -> Spec:
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a mapping of keys at the top level")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(f"  - {_format_error(dict(e))}" for e in exc.errors())
        raise SpecError(f"{origin} is invalid:\n{lines}") from None


def load_spec(path: Path) -> Spec:
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} not found; create one with `ferry init NAME`")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path.name} is not valid YAML: {exc}") from None
    return parse_spec(data, path.name)
