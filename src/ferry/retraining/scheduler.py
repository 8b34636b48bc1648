"""The server's retraining scheduler: drift windows, alerts and the cron schedule in, one
``ferry retrain`` process out.

The job runs as a separate process so a search never competes with requests for the event
loop, and so an external scheduler (a Kubernetes CronJob) runs exactly the same command. The
registry lock makes a second job for the same model, from any process, refuse to start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.core.spec import Spec
from ferry.registry.service import Registry
from ferry.retraining.policy import CronSchedule, TriggerPolicy

log = logging.getLogger("ferry.retraining")


def retrain_command(name: str, spec_path: Path, trigger: str, reason: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ferry",
        "retrain",
        name,
        "--spec",
        str(spec_path),
        "--trigger",
        trigger,
        "--reason",
        reason,
    ]


@dataclass
class RetrainScheduler:
    spec: Spec
    spec_path: Path
    registry: Registry | None
    actor: str = "ferry-server"
    clock: Callable[[], float] = time.time
    launch: Callable[[list[str]], Any] = field(default=lambda argv: subprocess.Popen(argv))
    policy: TriggerPolicy = field(init=False)
    job: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    launched: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.policy = TriggerPolicy(self.spec.retraining.triggers)
        schedule = self.spec.retraining.triggers.schedule
        self.cron = CronSchedule.parse(schedule) if schedule else None

    @property
    def name(self) -> str:
        return self.spec.name

    # signals ---------------------------------------------------------------------------
    def on_window(self, model: str, version: int, window: Any) -> None:
        """A drift window of the served model (called from the monitor's worker thread)."""
        if model != self.name or not self.spec.retraining.triggers.on_drift:
            return
        drifted = [f.feature for f in window.features if f.drifted]
        with self.lock:
            if self.policy.observe(bool(drifted), self.clock()):
                self._start("drift", f"drift in {version}: {', '.join(drifted[:5])}")

    def on_alert(self, change: Any) -> None:
        alert = change.alert
        wanted = self.spec.retraining.triggers.on_alerts
        if change.status != "firing" or alert.model != self.name:
            return
        if alert.rule.alertname not in wanted:
            return
        with self.lock:
            if self.policy.fire(self.clock()):
                self._start("alert", f"alert {alert.rule.alertname} fired on {alert.subject}")

    async def run(self) -> None:
        """Fire on the cron schedule until cancelled."""
        if self.cron is None:
            return
        while True:
            due = self.cron.next_after(self.clock())
            await asyncio.sleep(max(due - self.clock(), 0.0))
            with self.lock:
                if self.policy.fire(self.clock()):
                    self._start("schedule", f"schedule {self.spec.retraining.triggers.schedule}")

    # launching -------------------------------------------------------------------------
    def running(self) -> bool:
        return self.job is not None and self.job.poll() is None

    def _start(self, trigger: str, reason: str) -> None:
        if self.running():
            log.info("retraining %s not started (%s): a job is still running", self.name, reason)
            return
        log.warning("retraining %s: %s", self.name, reason)
        self._record(trigger, reason)
        self.launched.append((trigger, reason))
        self.job = self.launch(retrain_command(self.name, self.spec_path, trigger, reason))

    def _record(self, trigger: str, reason: str) -> None:
        if self.registry is None:
            return
        try:
            self.registry.record_event(
                self.name,
                "retrain_triggered",
                actor=self.actor,
                reason=reason,
                details={"trigger": trigger, "pid": os.getpid()},
            )
        except Exception:  # the job itself records its start; this event is a courtesy
            log.exception("could not record the retraining trigger")
