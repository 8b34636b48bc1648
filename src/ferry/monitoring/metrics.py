"""The metrics catalogue: every Prometheus series Ferry exports, defined in one place.

Names follow ``ferry_<subsystem>_<what>_<unit>``; labels are ``model`` and ``version`` plus a
few fixed ones. Under several workers prometheus_client's multiprocess mode is used
(``PROMETHEUS_MULTIPROC_DIR``), so series are summed across processes at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from ferry.monitoring.multiproc import scrape_directory

# ``*_created`` series are a quarter of all samples and Prometheus 2.x keeps them as separate
# series; without them a 20-model x 30-feature scrape stays under 50 ms.
disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
SCORE_BUCKETS = tuple(i / 10 for i in range(1, 11))


class Metrics:
    """All series, registered on one registry (a fresh one per server, so tests are isolated)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ferry_serving_requests_total",
            "Requests by outcome.",
            ["model", "protocol", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ferry_serving_request_duration_seconds",
            "Request latency, receipt to response.",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "ferry_serving_in_flight_requests",
            "Requests being served.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_wait = Histogram(
            "ferry_batching_queue_wait_seconds",
            "Time a request waited for its batch.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "ferry_batching_batch_rows",
            "Rows per graph call.",
            ["model", "version"],
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.loads = Counter(
            "ferry_pool_model_loads_total",
            "Model version loads by result.",
            ["model", "result"],
            registry=r,
        )
        self.model_info = Gauge(
            "ferry_pool_model_info",
            "1 for the version a ref serves.",
            ["model", "version", "ref"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.classes = Counter(
            "ferry_prediction_class_total",
            "Predicted labels.",
            ["model", "version", "label"],
            registry=r,
        )
        self.scores = Histogram(
            "ferry_prediction_score_ratio",
            "Positive-class probability (binary models).",
            ["model", "version"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.missing = Counter(
            "ferry_quality_missing_values_total",
            "Missing values served.",
            ["model", "version", "input"],
            registry=r,
        )
        self.out_of_range = Counter(
            "ferry_quality_out_of_range_values_total",
            "Values outside the training range.",
            ["model", "version", "input"],
            registry=r,
        )
        self.unseen = Counter(
            "ferry_quality_unseen_categories_total",
            "Categories not seen in training.",
            ["model", "version", "input"],
            registry=r,
        )
        self.drift_p = Gauge(
            "ferry_drift_p_value",
            "Last window's drift test p-value.",
            ["model", "version", "feature"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.drift_flag = Gauge(
            "ferry_drift_flag",
            "1 if the feature drifted in the last window.",
            ["model", "version", "feature"],
            registry=r,
            multiprocess_mode="max",
        )
        self.drift_share = Gauge(
            "ferry_drift_share_ratio",
            "Share of features that drifted.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.drift_alarm = Gauge(
            "ferry_drift_alarm",
            "1 while k of the last n windows drifted.",
            ["model", "version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.live_quality = Gauge(
            "ferry_feedback_quality",
            "Windowed quality from late labels.",
            ["model", "version", "metric"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.feedback_baseline = Gauge(
            "ferry_feedback_baseline_quality",
            "The bundle's test-set quality that live quality is compared with.",
            ["model", "version", "metric"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.feedback = Counter(
            "ferry_feedback_labels_total",
            "Late labels by join result.",
            ["model", "result"],
            registry=r,
        )
        self.log_dropped = Counter(
            "ferry_log_dropped_rows_total",
            "Prediction-log rows dropped because the store was slow.",
            ["model"],
            registry=r,
        )
        # Rollout: a canary's share of requests, and a shadow's agreement with what was answered.
        self.rollout_requests = Counter(
            "ferry_rollout_requests_total",
            "Requests answered, by the version and role (primary or canary) that answered.",
            ["model", "version", "role"],
            registry=r,
        )
        self.shadow_rows = Counter(
            "ferry_rollout_shadow_rows_total",
            "Rows the shadow version ran and compared with the answer returned.",
            ["model", "version"],
            registry=r,
        )
        self.shadow_disagreements = Counter(
            "ferry_rollout_shadow_disagreements_total",
            "Compared rows where the shadow's label (or value, beyond 1e-3 relative) differed.",
            ["model", "version"],
            registry=r,
        )
        self.shadow_skipped = Counter(
            "ferry_rollout_shadow_skipped_total",
            "Requests not mirrored to the shadow because too many shadow runs were pending.",
            ["model"],
            registry=r,
        )
        self.shadow_failures = Counter(
            "ferry_rollout_shadow_failures_total",
            "Shadow runs that failed (never seen by clients).",
            ["model", "version"],
            registry=r,
        )
        self.canary_weight = Gauge(
            "ferry_rollout_canary_weight",
            "Share of requests the canary version is sent (0 once it stops being the canary).",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )

    def watch_model(self, model: Any) -> None:
        """Batch sizes and the version info of a model the pool just loaded."""
        name, version = model.name, str(model.version)
        rows = self.batch_rows.labels(name, version)
        model.batcher.observers.append(lambda requests, batch_rows: rows.observe(batch_rows))
        model.batcher.wait_observers.append(self.queue_wait.labels(name, version).observe)
        self.model_info.labels(name, version, name).set(1)

    def count_quality(self, model: str, version: str, kind: str, counts: Mapping[str, int]) -> None:
        series = {
            "missing": self.missing,
            "out_of_range": self.out_of_range,
            "unseen": self.unseen,
        }[kind]
        for name, count in counts.items():
            if count:
                series.labels(model, version, name).inc(count)


def scrape(metrics: Metrics) -> tuple[bytes, str]:
    """Exposition text; under multiprocess mode, the merged view of every worker."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        # The workers' files, merged by our own reader: the library's takes ~50 ms at 20 models.
        return scrape_directory(directory), CONTENT_TYPE_LATEST
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
