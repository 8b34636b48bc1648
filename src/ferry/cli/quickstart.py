"""`ferry quickstart`: the whole loop on the embedded defaults, told as a short story.

train → serve → normal traffic → drifted traffic with late labels → drift alert → retraining
(a challenger on the spec's data plus the labelled production rows) → gates → canary →
promotion. The server is a real `ferry serve` process; the retraining is the real `ferry
retrain` process it starts; every step is read back from the registry's events.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml

from ferry.cli.console import console
from ferry.cli.specs import QUICKSTART, QUICKSTART_LOOP
from ferry.core.spec import Spec, parse_spec
from ferry.errors import ErrorCode, FerryError
from ferry.settings import Settings

if TYPE_CHECKING:
    import httpx
    import pandas as pd

    from ferry.registry.service import Registry

BATCH = 100
END_EVENTS = ("promoted", "rolled_back", "challenger_rejected", "retrain_failed")
# Rows per second: a little while the challenger is searched for (its latency probe shares the
# two cores with the server), more during the canary, whose live quality needs labelled rows.
TRICKLE, CANARY_TRAFFIC = 10, 100


class LoopError(FerryError):
    code = ErrorCode.INTERNAL


def _spec(time_budget: float) -> tuple[Spec, dict[str, Any]]:
    data: dict[str, Any] = {**QUICKSTART, **QUICKSTART_LOOP}
    data["search"] = {**QUICKSTART["search"], "time_budget_s": time_budget}  # type: ignore[dict-item]
    return parse_spec(data, "quickstart"), data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Traffic:
    """Sends rows to the records route and their labels to the feedback route, counting."""

    client: httpx.Client
    sent: int = 0
    failed: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    scores: list[tuple[int, float]] = field(default_factory=list)

    def send(self, frame: pd.DataFrame, target: str, batch: int = BATCH) -> None:
        for start in range(0, len(frame), batch):
            self._batch(frame.iloc[start : start + batch], target)

    def _batch(self, rows: pd.DataFrame, target: str) -> None:
        labels = rows[target].tolist()
        body = {"instances": _records(rows.drop(columns=[target]))}
        try:
            response = self.client.post("/v1/models/fraud:predict", json=body)
        except Exception:
            self.failed += 1
            return
        if response.status_code != 200:
            self.failed += 1
            return
        answer = response.json()
        self.sent += len(labels)
        version = answer["model_version"]
        self.versions[version] = self.versions.get(version, 0) + len(labels)
        for label, prediction in zip(labels, answer["predictions"], strict=True):
            self.scores.append((int(label), float(prediction["probabilities"]["1"])))
        # The server names the rows of a batch request ``id/0``, ``id/1``, ... (monitor.row_ids).
        ids = (
            [answer["id"]]
            if len(labels) == 1
            else [f"{answer['id']}/{i}" for i in range(len(labels))]
        )
        feedback = [{"id": i, "label": int(y)} for i, y in zip(ids, labels, strict=True)]
        self.client.post("/v2/models/fraud/feedback", json=feedback)

    def live_auc(self) -> float:
        import numpy as np

        from ferry.retraining.compare import binary_auc

        truth = np.asarray([s[0] for s in self.scores])
        scores = np.asarray([s[1] for s in self.scores])
        self.scores.clear()
        return binary_auc(truth, scores)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.drop(columns=["transaction_id", "customer_segment"], errors="ignore")
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    for record in records:
        for key, value in record.items():
            if hasattr(value, "isoformat"):
                record[key] = value.isoformat()
            elif isinstance(value, float) and math.isnan(value):
                record[key] = None
    return records


class Story:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.step = 0
        self.alerts: set[tuple[Any, Any]] = set()

    def say(self, text: str) -> None:
        self.step += 1
        elapsed = time.perf_counter() - self.started
        console.print(f"[bold cyan]{self.step:>2}.[/] [dim]{elapsed:5.0f}s[/] {text}")


def _events(registry: Registry, after: int) -> Iterator[Any]:
    for event in reversed(registry.events("fraud", limit=200)):
        if event.id > after:
            yield event


def _tell(story: Story, event: Any) -> None:
    details = event.details
    if event.kind == "alert_firing":
        key = (details.get("alertname"), event.version)
        if key not in story.alerts:  # drift near the threshold flaps: the first firing tells it
            story.alerts.add(key)
            story.say(f"alert [red]{details.get('alertname')}[/] fired: {event.reason}")
    elif event.kind == "retrain_triggered":
        story.say(f"the server started `ferry retrain fraud` ({event.reason})")
    elif event.kind == "retrain_started":
        story.say("retraining: searching for a challenger on the spec's data + production rows")
    elif event.kind in ("challenger_passed", "challenger_rejected"):
        for c in details.get("comparisons", []):
            story.say(
                f"gate data {c['dataset']}: {c['metric']} challenger {c['challenger']:.4f} vs "
                f"champion {c['champion']:.4f} ({c['delta']:+.4f}, 95% CI "
                f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], {c['rows']} rows)"
            )
        mark = "[green]passed[/]" if details.get("passed") else "[red]rejected[/]"
        story.say(f"challenger fraud:{event.version} {mark}: {event.reason}")
        story.say(f"verdict report: {details.get('report')}")
    elif event.kind == "alias_set" and details.get("alias") == "canary":
        weight = details.get("weight")
        share = f" with {weight:.0%} of traffic" if weight else ""
        story.say(f"canary: fraud:{details.get('to')}{share}")
    elif event.kind == "retrain_failed":
        story.say(f"[red]retraining failed[/]: {event.reason}")
    elif event.kind == "promoted":
        story.say(f"[green]promoted[/] fraud:{event.version} to production: {event.reason}")
    elif event.kind == "rolled_back":
        story.say(f"[red]rolled back[/] fraud:{event.version}: {event.reason}")


@dataclass
class Loop:
    spec: Spec
    spec_path: Path
    settings: Settings
    story: Story
    port: int = field(default_factory=_free_port)
    server: subprocess.Popen[bytes] | None = None

    def start_server(self) -> None:
        log = (self.settings.home / "quickstart-server.log").open("wb")
        argv = [
            sys.executable,
            "-m",
            "ferry",
            "serve",
            "fraud@production",
            "--port",
            str(self.port),
            "--grpc-port",
            "-1",
            "--spec",
            str(self.spec_path),
            "--retrain",
            "--poll-interval",
            "1",
            "--drift-window",
            str(self.spec.monitoring.drift.window),
        ]
        env = {**os.environ, "FERRY_HOME": str(self.settings.home.resolve())}
        self.server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server is not None and self.server.poll() is not None:
                raise LoopError("the server exited at start; see .ferry/quickstart-server.log")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise LoopError(f"the server was not ready within {timeout:g} s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(timeout=60)


def _production(rows: int, seed: int, shift: float, concept: float) -> pd.DataFrame:
    from ferry.data.fraud import fraud

    return fraud(rows, seed=seed, shift=shift, concept=concept)


def run_loop(loop: Loop, registry: Registry, timeout_s: float) -> str:
    import httpx

    story, target = loop.story, loop.spec.data.target
    last = max((e.id for e in registry.events("fraud", limit=1)), default=0)
    with httpx.Client(base_url=loop.url, timeout=30) as client:
        traffic = Traffic(client)
        traffic.send(_production(3000, seed=11, shift=0.0, concept=0.0), target)
        story.say(
            f"normal traffic: {traffic.sent} rows served, labels sent back; live ROC-AUC "
            f"{traffic.live_auc():.3f}"
        )
        drifted = _production(40_000, seed=12, shift=1.0, concept=1.5)
        traffic.send(drifted.iloc[:6000], target)
        story.say(
            "drifted traffic: 6000 rows (amounts and distances +1σ, more card-not-present, a new"
            f" fraud ring) with late labels; live ROC-AUC {traffic.live_auc():.3f}"
        )
        ended, offset, deadline = None, 6000, time.monotonic() + timeout_s
        rate = TRICKLE
        while ended is None and time.monotonic() < deadline:
            # Small requests: the canary split is per request, so many small ones split evenly.
            traffic.send(drifted.iloc[offset : offset + rate], target, batch=10)
            offset = (offset + rate) % (len(drifted) - CANARY_TRAFFIC)
            for event in _events(registry, last):
                last = event.id
                _tell(story, event)
                ended = event.kind if event.kind in END_EVENTS else ended
                if event.kind == "alias_set" and event.details.get("alias") == "canary":
                    rate = CANARY_TRAFFIC
            time.sleep(1.0)
        served = ", ".join(f"fraud:{v} {n}" for v, n in sorted(traffic.versions.items()))
        story.say(f"requests: {traffic.sent} rows served ({served}), {traffic.failed} failed")
    return ended or "timeout"


def quickstart_command(
    time_budget: float = typer.Option(45, help="Search budget of the first model (s)."),
    serve: bool = typer.Option(True, help="Leave the server running at the end."),
    timeout: float = typer.Option(240, help="Give up on the loop after this long (s)."),
) -> None:
    """The whole loop on builtin:fraud with embedded defaults: train, serve, drift, retrain,
    gate, canary, promote. Leaves the server running (or stops it with --no-serve)."""
    from ferry.cli.context import open_registry
    from ferry.cli.train import run_training

    settings = Settings()
    spec, data = _spec(time_budget)
    story = Story()
    console.print("[bold]Ferry quick start[/]: the whole loop on builtin:fraud, embedded defaults")
    outcome = run_training(spec, settings, alias="production")
    story.say(
        f"trained fraud:{outcome.version.version if outcome.version else '?'} "
        f"(test ROC-AUC {outcome.evaluation.metrics.get('roc_auc', float('nan')):.3f}) "
        "and aliased it production"
    )
    spec_path = settings.home / "quickstart" / "ferry.yaml"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    loop = Loop(spec, spec_path, settings, story)
    loop.start_server()
    story.say(f"serving fraud@production at {loop.url} (REST, V2), monitoring and retraining on")
    try:
        ended = run_loop(loop, open_registry(settings), timeout)
    except BaseException:
        loop.stop_server()
        raise
    if ended != "promoted":
        loop.stop_server()
        raise LoopError(
            f"the loop ended with {ended!r}, not a promotion; see `ferry registry events fraud`"
        )
    elapsed = time.perf_counter() - story.started
    story.say(f"done in {elapsed:.0f} s; every step: `ferry registry events fraud`")
    if not serve:
        loop.stop_server()
        return
    console.print(f"the server keeps running at {loop.url}; Ctrl-C stops it")
    try:
        assert loop.server is not None
        loop.server.wait()
    except KeyboardInterrupt:
        loop.stop_server()


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart_command)
