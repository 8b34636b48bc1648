"""The ``ferry.yaml`` schema. A wrong key or value fails at start with the key named and the fix."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ferry.core.refs import check_name
from ferry.errors import RefError, SpecError

FAMILIES = ("logistic", "linear", "extra_trees", "random_forest", "hist_gb", "lightgbm", "mlp")
# Families that take sparse TF-IDF columns; trees and boosting would densify thousands of them.
TEXT_FAMILIES = ("logistic", "linear", "mlp")
MAX_NGRAM = 3
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
# Quality the server can compute from late labels (monitoring/feedback.py), per task.
LIVE_METRICS = {
    "classification": ("accuracy", "precision", "recall", "f1"),
    "regression": ("rmse", "mae"),
}


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


class TextSpec(_Strict):
    """TF-IDF of free-text columns, in the graph: tokens are runs of ASCII letters, digits, ``_``
    and inner apostrophes after ASCII lowercasing (what ONNX Runtime reproduces exactly)."""

    columns: list[str] | None = Field(
        default=None, description="Text columns; default: every column inferred as text"
    )
    max_features: int = Field(default=20_000, ge=1, description="Most frequent n-grams kept")
    ngram_range: tuple[int, int] = (1, 2)
    min_df: int = Field(default=2, ge=1, description="Documents an n-gram must appear in")
    max_df: float = Field(default=1.0, gt=0, le=1, description="Share of documents, at most")
    sublinear_tf: bool = Field(default=True, description="1 + log(count) instead of count")

    @field_validator("ngram_range")
    @classmethod
    def _ngrams(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= value[0] <= value[1] <= MAX_NGRAM:
            raise ValueError(
                f"expected [low, high] with 1 <= low <= high <= {MAX_NGRAM}, e.g. [1, 2]"
            )
        return value


class FeatureSpec(_Strict):
    impute: Literal["median", "mean"] = "median"
    missing_indicators: bool = True
    clip_quantiles: tuple[float, float] | None = (0.005, 0.995)
    encoding: Literal["onehot", "ordinal"] = "onehot"
    max_categories: int = Field(default=30, ge=2)
    scale: bool = True
    pca_components: int | float | None = None
    interactions: bool = False
    # Left out of dumps when unset, so the spec hashes of specs without text stay as they were.
    text: TextSpec | None = Field(
        default=None,
        description="Unset: text columns are left out",
        exclude_if=lambda value: value is None,
    )


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


# ---- monitoring ------------------------------------------------------------------------------

ALERT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
DEFAULT_ALERT_NAMES = {
    "drift_share": "FerryDriftShareHigh",
    "accuracy_below": "FerryLiveQualityLow",
    "accuracy_drop": "FerryLiveQualityDropped",
    "latency_p99": "FerryLatencyP99High",
    "error_rate": "FerryErrorRateHigh",
}
ALERT_KINDS = tuple(DEFAULT_ALERT_NAMES)


class DriftSpec(_Strict):
    window: int = Field(default=500, ge=10, description="Rows per drift test window")
    alpha: float = Field(default=0.001, gt=0, lt=1, description="Family-wise error per window")
    k: int = Field(default=2, ge=1, description="Drifted windows among the last n for an alarm")
    n: int = Field(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _k_of_n(self) -> DriftSpec:
        if self.k > self.n:
            raise ValueError(
                f"k ({self.k}) is larger than n ({self.n}): an alarm needs k drifted windows "
                "among the last n; lower k or raise n"
            )
        return self


class _AlertRuleBase(_Strict):
    kind: str
    name: str | None = Field(default=None, description="alertname; a default per kind")
    for_s: float = Field(default=60, ge=0, description="How long the condition must hold")
    severity: Literal["warning", "critical"] = "warning"

    @field_validator("name")
    @classmethod
    def _alert_name(cls, value: str | None) -> str | None:
        if value is not None and not ALERT_NAME.match(value):
            raise ValueError(
                "expected letters, digits and '_', not starting with a digit, e.g. FraudDrift"
            )
        return value

    @property
    def alertname(self) -> str:
        return self.name or DEFAULT_ALERT_NAMES[self.kind]


class DriftShareRule(_AlertRuleBase):
    """The share of features that drifted in the last window is above ``threshold``."""

    kind: Literal["drift_share"] = "drift_share"
    threshold: float = Field(default=0.3, ge=0, lt=1)


class _LiveQualityRule(_AlertRuleBase):
    metric: str = Field(default="accuracy", description="A metric computed from late labels")
    min_labels: int = Field(default=100, ge=1, description="Labels needed before it is judged")

    @field_validator("metric")
    @classmethod
    def _live_metric(cls, value: str) -> str:
        known = [m for metrics in LIVE_METRICS.values() for m in metrics]
        if value not in known:
            raise ValueError(f"not computed from late labels; choose from {known}")
        return value


class AccuracyBelowRule(_LiveQualityRule):
    """Live quality is worse than ``threshold`` (below it; above it for rmse and mae)."""

    kind: Literal["accuracy_below"] = "accuracy_below"
    threshold: float


class AccuracyDropRule(_LiveQualityRule):
    """Live quality is worse than the bundle's test metric by more than ``drop`` (absolute)."""

    kind: Literal["accuracy_drop"] = "accuracy_drop"
    drop: float = Field(default=0.05, gt=0)


class _RequestRule(_AlertRuleBase):
    window_s: int = Field(default=300, ge=10, le=86_400, description="Requests looked at")
    min_requests: int = Field(default=20, ge=1, description="Requests needed before it is judged")


class LatencyP99Rule(_RequestRule):
    """p99 request latency is over ``threshold_ms`` (default: constraints.max_latency_p99_ms)."""

    kind: Literal["latency_p99"] = "latency_p99"
    threshold_ms: float | None = Field(default=None, gt=0)


class ErrorRateRule(_RequestRule):
    """The share of requests failing with a server error is above ``threshold``."""

    kind: Literal["error_rate"] = "error_rate"
    threshold: float = Field(default=0.05, gt=0, lt=1)


AlertRule = Annotated[
    DriftShareRule | AccuracyBelowRule | AccuracyDropRule | LatencyP99Rule | ErrorRateRule,
    Field(discriminator="kind"),
]


def default_alert_rules(budget_ms: float | None) -> list[AlertRule]:
    """Used when ``monitoring.alerts`` is not given; ``alerts: []`` turns alerting off."""
    rules: list[AlertRule] = [
        DriftShareRule(threshold=0.3),
        ErrorRateRule(threshold=0.05, severity="critical"),
    ]
    if budget_ms is not None:
        rules.append(LatencyP99Rule(threshold_ms=budget_ms))
    return rules


class MonitoringSpec(_Strict):
    drift: DriftSpec = Field(default_factory=DriftSpec)
    sample_rate: float = Field(default=1.0, ge=0, le=1, description="Share of rows logged")
    alerts: list[AlertRule] | None = Field(default=None, description="None: the default rules")
    webhook_url: str | None = Field(default=None, description="Alertmanager-style receiver")
    evaluation_interval_s: float = Field(default=15, gt=0, le=3600)

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(
                "expected an http:// or https:// URL, e.g. http://alertmanager:9093/hook"
            )
        return value

    def rules(self, budget_ms: float | None, task: str | None = None) -> list[AlertRule]:
        """The rules to evaluate: defaults filled in and checked; errors name the key."""
        given = default_alert_rules(budget_ms) if self.alerts is None else self.alerts
        rules = [_resolve_rule(i, rule, budget_ms, task) for i, rule in enumerate(given)]
        seen: dict[tuple[str, str], int] = {}
        for index, rule in enumerate(rules):
            first = seen.setdefault((rule.alertname, rule.severity), index)
            if first != index:
                raise ValueError(
                    f"monitoring.alerts.{index}: same alert name {rule.alertname!r} and severity "
                    f"as monitoring.alerts.{first}; give one of them another `name`"
                )
        return rules


def _resolve_rule(index: int, rule: AlertRule, budget_ms: float | None, task: str | None) -> Any:
    key = f"monitoring.alerts.{index}"
    if isinstance(rule, LatencyP99Rule) and rule.threshold_ms is None:
        if budget_ms is None:
            raise ValueError(
                f"{key}.threshold_ms: required because constraints.max_latency_p99_ms is not "
                "set; give the p99 budget in milliseconds"
            )
        return rule.model_copy(update={"threshold_ms": budget_ms})
    if isinstance(rule, _LiveQualityRule) and task and rule.metric not in LIVE_METRICS[task]:
        raise ValueError(
            f"{key}.metric: {rule.metric!r} cannot be computed from late labels for task "
            f"{task!r}; choose from {list(LIVE_METRICS[task])}"
        )
    return rule


# ---- retraining -------------------------------------------------------------------------------

CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")


class TriggerSpec(_Strict):
    """When the server starts a retraining job for the model it serves."""

    schedule: str | None = Field(default=None, description="Cron, UTC: '0 3 * * 1' = Mon 03:00")
    on_alerts: list[str] = Field(
        default_factory=lambda: [
            DEFAULT_ALERT_NAMES["drift_share"],
            DEFAULT_ALERT_NAMES["accuracy_below"],
            DEFAULT_ALERT_NAMES["accuracy_drop"],
        ],
        description="Alert names whose firing counts as a signal",
    )
    on_drift: bool = Field(default=True, description="A drift-alarm window counts as a signal")
    k: int = Field(default=2, ge=1, description="Signals among the last n checks to trigger")
    n: int = Field(default=3, ge=1, le=100)
    cooldown_s: float = Field(default=3600, ge=0, description="Quiet time after a trigger")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != len(CRON_FIELDS):
            raise ValueError(
                f"expected 5 cron fields ({', '.join(CRON_FIELDS)}), e.g. '0 3 * * *'"
            )
        return value

    @model_validator(mode="after")
    def _k_of_n(self) -> TriggerSpec:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) is larger than n ({self.n}); lower k or raise n")
        return self


class ProductionDataSpec(_Strict):
    """Labelled production rows (prediction log joined with late labels) for the challenger."""

    use: bool = Field(default=True, description="Add labelled production rows")
    since_s: float | None = Field(default=None, gt=0, description="Only rows this recent")
    max_rows: int | None = Field(default=None, gt=0, description="Only the latest rows")
    weight: float = Field(default=1.0, gt=0, le=100, description="Weight of a production row")
    half_life_s: float | None = Field(default=None, gt=0, description="Recency weighting")
    holdout_share: float = Field(default=0.3, gt=0, lt=1, description="Latest rows kept out")
    min_holdout_rows: int = Field(default=200, ge=10, description="Else gates use the test set")


class ChallengerGatesSpec(_Strict):
    """What a challenger must show to replace the champion (besides the spec's ``gates``)."""

    metric: str | None = Field(default=None, description="Default: search.metric")
    min_improvement: float = Field(default=0.0, ge=0, description="Margin over the champion")
    max_regression: float = Field(
        default=0.02, ge=0, description="Allowed loss on the original test set"
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    bootstrap: int = Field(default=1000, ge=100, le=100_000)


class RolloutSpec(_Strict):
    mode: Literal["canary", "shadow", "direct"] = "canary"
    canary_weight: float = Field(default=0.1, gt=0, le=1)
    observe_s: float = Field(default=600, ge=0, description="Observation before promotion")
    min_labels: int = Field(default=50, ge=1, description="Labels per version to compare")
    max_quality_drop: float = Field(
        default=0.0, ge=0, description="Live quality the new version may lose"
    )
    check_interval_s: float = Field(default=5, gt=0)
    # Input drift is a property of the traffic, which both versions share, so it says nothing
    # about the new version: by default only errors, latency and live quality roll back.
    rollback_on: list[str] = Field(
        default_factory=lambda: ["error_rate", "latency_p99", "accuracy_below", "accuracy_drop"],
        description="Alert kinds that roll the new version back when they fire",
    )

    @field_validator("rollback_on")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        unknown = [k for k in value if k not in ALERT_KINDS]
        if unknown:
            raise ValueError(f"unknown alert kind(s) {unknown}; choose from {list(ALERT_KINDS)}")
        return value


class RetrainingSpec(_Strict):
    triggers: TriggerSpec = Field(default_factory=TriggerSpec)
    production_data: ProductionDataSpec = Field(default_factory=ProductionDataSpec)
    warm_start: bool = Field(default=True, description="Champion's parameters tried first")
    time_budget_s: float | None = Field(default=None, gt=0, description="Default: search's")
    gates: ChallengerGatesSpec = Field(default_factory=ChallengerGatesSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)


# ---- image models and export ----------------------------------------------------------------

IMAGE_SOURCES = ("builtin:digits", "folder:", "images:")


def is_image_source(source: str) -> bool:
    return source == IMAGE_SOURCES[0] or source.startswith(IMAGE_SOURCES[1:])


class CnnSpec(_Strict):
    """A convolutional network trained by ``ferry.vision`` on images (PyTorch, CPU)."""

    kind: Literal["cnn"] = "cnn"
    epochs: int = Field(default=30, ge=1, le=1000, description="Upper bound; early stopping")
    batch_size: int = Field(default=64, ge=1, le=4096)
    lr: float = Field(default=0.003, gt=0, le=1, description="Adam learning rate")
    image_size: int | tuple[int, int] | None = Field(
        default=None, description="Height and width the model sees; default: 8 for digits, 32"
    )
    color: Literal["grayscale", "rgb"] | None = Field(
        default=None, description="Default: grayscale for digits, rgb for image folders"
    )
    filters: int = Field(default=16, ge=4, le=256, description="Filters of the first layer")
    patience: int = Field(default=5, ge=1, description="Epochs without validation gain to stop")
    augment: bool = Field(default=True, description="Random small shifts and rotations")
    max_shift: float = Field(default=0.1, ge=0, lt=0.5, description="Share of width/height")
    max_rotation: float = Field(default=10.0, ge=0, le=45, description="Degrees")
    threads: int = Field(default=1, ge=1, le=64, description="torch threads while training")
    seed: int = 0

    @field_validator("image_size")
    @classmethod
    def _size(cls, value: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        sides = (value,) if isinstance(value, int) else value or ()
        if any(not 4 <= side <= 1024 for side in sides):
            raise ValueError("expected a side (or [height, width]) between 4 and 1024 pixels")
        return value

    def size(self, default: int) -> tuple[int, int]:
        if self.image_size is None:
            return default, default
        if isinstance(self.image_size, int):
            return self.image_size, self.image_size
        return self.image_size


class ExportSpec(_Strict):
    max_quantization_drop: float = Field(
        default=0.01, ge=0, le=1, description="Metric a quantized model may lose (absolute)"
    )
    quantization_metric: str | None = Field(
        default=None, description="Default: accuracy (classification), rmse (regression)"
    )


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
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    retraining: RetrainingSpec = Field(default_factory=RetrainingSpec)
    model: CnnSpec | None = Field(default=None, description="Image models: kind cnn")
    export: ExportSpec = Field(default_factory=ExportSpec)

    @model_validator(mode="before")
    @classmethod
    def _image_defaults(cls, data: Any) -> Any:
        # Image folders carry their labels in sub-folder names, so no target column is named.
        if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
            return data
        source = data["data"].get("source")
        if isinstance(source, str) and is_image_source(source):
            if source != "builtin:digits" and data.get("model") is None:
                data = {**data, "model": {"kind": "cnn"}}
            if data.get("model") is not None and "target" not in data["data"]:
                data = {**data, "data": {**data["data"], "target": "label"}}
        return data

    @model_validator(mode="after")
    def _check_image_model(self) -> Spec:
        if self.model is None:
            return self
        if self.task != "classification":
            raise ValueError(
                f"task: a cnn classifies images; set task: classification (received {self.task!r})"
            )
        if not is_image_source(self.data.source):
            raise ValueError(
                f"data.source: a cnn trains on images, not {self.data.source!r}; use "
                "builtin:digits or folder:PATH (one sub-folder of images per class)"
            )
        if self.split.valid_size == 0:
            raise ValueError(
                "split.valid_size: a cnn stops early on the validation split; set it above 0, "
                "e.g. 0.1"
            )
        return self

    @model_validator(mode="after")
    def _check_export(self) -> Spec:
        allowed = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        metric = self.export.quantization_metric
        metric = metric or ("accuracy" if self.task == "classification" else "rmse")
        if metric not in allowed:
            raise ValueError(
                f"export.quantization_metric: {metric!r} does not fit task {self.task!r}; "
                f"choose from {list(allowed)}"
            )
        self.export.quantization_metric = metric
        return self

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
        challenger = self.retraining.gates
        challenger.metric = challenger.metric or self.search.metric
        if challenger.metric not in allowed:
            raise ValueError(
                f"retraining.gates.metric: {challenger.metric!r} does not fit task "
                f"{self.task!r}; choose from {list(allowed)}"
            )
        return self

    @model_validator(mode="after")
    def _check_monitoring(self) -> Spec:
        # Resolved here, as search.metric is: defaults in, latency budget from constraints.
        self.monitoring.alerts = self.monitoring.rules(
            self.constraints.max_latency_p99_ms, self.task
        )
        return self

    @model_validator(mode="after")
    def _check_text(self) -> Spec:
        if self.features.text is None:
            return self
        if "families" not in self.search.model_fields_set:
            self.search.families = ["logistic"]
        wrong = [f for f in self.search.families if f not in TEXT_FAMILIES]
        if wrong:
            raise ValueError(
                f"search.families: {wrong} cannot take the sparse TF-IDF features of "
                f"features.text; choose from {list(TEXT_FAMILIES)}"
            )
        for key in ("pca_components", "interactions"):
            if getattr(self.features, key):
                raise ValueError(
                    f"features.{key}: not available with features.text (thousands of sparse "
                    "TF-IDF columns); remove one of them"
                )
        return self

    def default_metric(self) -> str:
        return "roc_auc" if self.task == "classification" else "rmse"

    def spec_hash(self) -> str:
        # Monitoring, retraining and export settings do not change the model, so not its
        # lineage hash; nor does an absent image model (hashes of tabular specs stay as they were).
        skip = {"monitoring", "retraining", "export"} | ({"model"} if self.model is None else set())
        data = self.model_dump(mode="json", exclude=skip)
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _key(loc: tuple[Any, ...]) -> str:
    """Dotted key path; an alert rule's ``kind`` tag, which pydantic adds to it, is left out."""
    parts = [
        str(part)
        for i, part in enumerate(loc)
        if not (part in ALERT_KINDS and i >= 2 and loc[i - 2] == "alerts")
    ]
    return ".".join(parts)


def _format_error(error: dict[str, Any]) -> str:
    key = _key(tuple(error["loc"])) or "(top level)"
    if error["type"] == "union_tag_not_found":
        return f"{key}.kind: required key is missing; choose from {list(ALERT_KINDS)}"
    if error["type"] == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        return f"{key}.kind: unknown kind {tag!r}; choose from {list(ALERT_KINDS)}"
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
