"""`ferry serve`: REST + gRPC inference server for registry refs or bundle directories."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

from ferry.core.spec import load_spec
from ferry.errors import SpecError
from ferry.serving.auth import TokenAuth
from ferry.serving.batching import BatchConfig
from ferry.settings import Settings


def _delay_ok(delay: str) -> bool:
    try:
        return not delay or 0 <= float(delay) < float("inf")
    except ValueError:
        return False


def _model_batches(values: list[str], base: BatchConfig) -> dict[str, BatchConfig]:
    batches: dict[str, BatchConfig] = {}
    for value in values:
        name, _, rest = value.partition("=")
        size, _, delay = rest.partition(":")
        # ASCII digits only: str.isdigit() accepts "²", which int() then refuses.
        good_size = size.isascii() and size.isdigit() and int(size) > 0
        if not name or not good_size or not _delay_ok(delay):
            raise SpecError(
                f"--model-batch {value!r}: expected NAME=MAX_BATCH_SIZE[:MAX_DELAY_MS] with a "
                "positive whole size and a delay of 0 or more, e.g. fraud=128:2"
            )
        batches[name] = BatchConfig(
            enabled=base.enabled,
            max_batch_size=int(size),
            max_delay_ms=float(delay) if delay else base.max_delay_ms,
            max_queue_rows=base.max_queue_rows,
            timeout_s=base.timeout_s,
        )
    return batches


def serve_command(
    refs: list[str] = typer.Argument(
        ..., help="fraud@production, fraud:3, fraud, or a bundle dir."
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 to expose)."),
    port: int = typer.Option(8080, help="HTTP port."),
    grpc_port: int = typer.Option(8081, help="gRPC port; -1 disables gRPC."),
    workers: int = typer.Option(1, min=1, help="Processes sharing the ports."),
    poll_interval: float = typer.Option(5.0, help="Seconds between registry alias checks."),
    grace: float = typer.Option(30.0, help="Seconds to finish accepted requests on SIGTERM."),
    drain_delay: float = typer.Option(1.0, help="Seconds of 503 readiness before listeners close."),
    batching: bool = typer.Option(True, help="Dynamic batching on/off."),
    max_batch_size: int = typer.Option(64, min=1, help="Rows per graph call."),
    max_delay_ms: float = typer.Option(0.0, min=0, help="Wait for more rows before a call."),
    max_queue_rows: int = typer.Option(8192, min=1, help="Queued rows before 503."),
    timeout: float = typer.Option(10.0, help="Per-request inference timeout (s)."),
    model_batch: list[str] = typer.Option([], help="Per model: NAME=SIZE[:DELAY_MS]."),
    max_body_mb: float = typer.Option(64.0, help="Request body limit (MiB)."),
    log_level: str = typer.Option("warning", help="debug, info, warning, error."),
    monitoring: bool = typer.Option(True, help="Metrics, drift, prediction log, feedback."),
    spec: Path | None = typer.Option(
        None, "--spec", help="ferry.yaml whose monitoring section (drift, sampling, alerts) to use."
    ),
    webhook_url: str | None = typer.Option(
        None, envvar="FERRY_ALERT_WEBHOOK_URL", help="Alertmanager-style webhook for alerts."
    ),
    sample_rate: float = typer.Option(1.0, min=0, max=1, help="Share of rows logged."),
    drift_window: int = typer.Option(500, min=10, help="Rows per drift test window."),
    log_url: str | None = typer.Option(
        None,
        envvar="FERRY_PREDICTION_LOG_URL",
        help="Prediction log in a database (postgresql://...) instead of local files.",
    ),
    retrain: bool = typer.Option(
        False, help="Run `ferry retrain` on the --spec retraining triggers (drift, alerts, cron)."
    ),
) -> None:
    """Serve models over Open Inference Protocol V2 (REST and gRPC)."""
    from ferry.serving.server import ServeConfig, run

    settings = Settings()
    base = BatchConfig(
        enabled=batching,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        max_queue_rows=max_queue_rows,
        timeout_s=timeout,
    )
    config = ServeConfig(
        refs=refs,
        host=host,
        port=port,
        grpc_port=None if grpc_port < 0 else grpc_port,
        workers=workers,
        registry_url=settings.resolved_registry_url(),
        artifacts_url=settings.resolved_artifacts_url(),
        cache_dir=Path(settings.home) / "cache",
        poll_interval_s=poll_interval,
        grace_s=grace,
        drain_delay_s=drain_delay,
        max_body=int(max_body_mb * 1024 * 1024),
        batch=base,
        per_model_batch=_model_batches(model_batch, base),
        auth=TokenAuth(settings.token_list("predict"), settings.token_list("admin")),
        log_level=log_level,
        monitoring=monitoring,
        log_dir=Path(settings.home) / "predictions",
        sample_rate=sample_rate,
        drift_window=drift_window,
        log_url=log_url,
        spec=load_spec(spec) if spec else None,
        webhook_url=webhook_url or None,  # an empty variable means unset, not "no webhook"
        spec_path=spec.resolve() if spec else None,
        retrain=retrain,
    )
    if retrain and spec is None:
        raise SpecError("--retrain needs --spec ferry.yaml: its retraining section says when")
    if retrain and importlib.util.find_spec("sklearn") is None:
        raise SpecError(
            "--retrain starts `ferry retrain`, which needs the lab packages (scikit-learn, ...): "
            "use the full image or `pip install ferry-ml`, or run retraining as a CronJob"
        )
    raise typer.Exit(run(config))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
