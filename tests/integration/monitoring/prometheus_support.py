"""Helpers for the monitoring tests that use the real Prometheus tools: finding the binaries,
a Prometheus server on a free loopback port with its own config and data dir, a ``ferry serve``
process, request records built from a bundle's signature, and the metric names a PromQL
expression refers to.

Test modules import this file by path (``sys.path``): pytest runs with ``--import-mode=importlib``
and the test tree has no packages.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from ferry.monitoring.metrics import Metrics

FERRY = Path(sys.executable).parent / "ferry"
REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "ferry.json"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
# Start-up is interpreter + imports + ONNX Runtime (ferry) or TSDB + web (Prometheus): seconds
# on a busy 2-core machine, so the deadlines are generous and only hit when something is wrong.
READY_TIMEOUT_S = 60.0
POLL_S = 0.1


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_tool(name: str) -> str:
    """The path of a Prometheus tool. Missing: skip on a developer's machine, fail under CI
    (``.ci/run`` installs Debian's ``prometheus`` package, so there it is a broken setup)."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not on PATH; install it with `apt-get install -y prometheus`"
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this is an error, not a skip)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], Any], what: str, timeout: float, alive: Callable[[], str | None]
) -> Any:
    """Poll ``check`` until it returns something truthy; fail fast when ``alive`` reports that
    the process behind it died (a message), and with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        died = alive()
        assert died is None, died
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        time.sleep(POLL_S)  # between polls of the readiness or query API, not instead of them


@dataclass
class Process:
    """A server process started by a test; its output goes to a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def exited(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        return f"{self.name} exited with {code}:\n{self.output()}"

    def wait_ready(self, path: str, timeout: float = READY_TIMEOUT_S) -> None:
        def ready() -> bool:
            try:
                return httpx.get(self.url + path, timeout=2.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, f"{self.name} not ready on {path}", timeout, self.exited)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit; this process only, by its pid."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)


def _start(name: str, argv: list[str], port: int, log: Path, env: dict[str, str]) -> Process:
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            argv, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Process(name, proc, port, log)


# ferry ---------------------------------------------------------------------------------------
def ferry_env(home: Path) -> dict[str, str]:
    """This process's environment with every ``FERRY_*`` replaced by a private home; no
    multiprocess metrics dir is inherited (one worker exports from its own registry)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FERRY_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(FERRY_HOME=str(home), COLUMNS="400", NO_COLOR="1", TERM="dumb")
    return env


@contextmanager
def ferry_serving(ref: Path | str, home: Path, tmp: Path, *args: str) -> Iterator[Process]:
    """``ferry serve REF`` on a free port (gRPC off), ready, and always stopped afterwards."""
    port = free_port()
    argv = [str(FERRY), "serve", str(ref), "--port", str(port), "--grpc-port", "-1", *args]
    server = _start("ferry serve", argv, port, tmp / f"ferry-{port}.log", ferry_env(home))
    try:
        server.wait_ready("/v2/health/ready")
        yield server
    finally:
        server.stop()


# prometheus ----------------------------------------------------------------------------------
def scrape_config(targets: list[str], interval: str = "1s") -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "ferry",
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": targets}],
            }
        ],
    }


@dataclass
class Prometheus:
    process: Process

    @property
    def url(self) -> str:
        return self.process.url

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10.0)
        body = response.json()
        assert response.status_code == 200 and body.get("status") == "success", (
            f"query {expr!r} failed: {response.status_code} {body}"
        )
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Series labels (sorted pairs, without __name__, job and instance) to the value."""
        found = {}
        for series in self.query(expr):
            labels = {
                k: v
                for k, v in series["metric"].items()
                if k not in ("__name__", "job", "instance")
            }
            found[tuple(sorted(labels.items()))] = float(series["value"][1])
        return found

    def wait_for(
        self,
        expr: str,
        accept: Callable[[dict[tuple[tuple[str, str], ...], float]], bool] = bool,
        timeout: float = READY_TIMEOUT_S,
    ) -> dict[tuple[tuple[str, str], ...], float]:
        """Poll ``expr`` until ``accept`` takes its values; fail with the last values seen."""
        seen: list[dict[tuple[tuple[str, str], ...], float]] = [{}]

        def check() -> dict[tuple[tuple[str, str], ...], float] | None:
            seen[0] = self.values(expr)
            return seen[0] if seen[0] and accept(seen[0]) else None

        try:
            return wait_until(check, f"{expr!r} not as expected", timeout, self.process.exited)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last values {seen[0]}") from None

    def targets_up(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/targets", timeout=10.0)
        return [t for t in response.json()["data"]["activeTargets"] if t["health"] == "up"]


@contextmanager
def prometheus_running(binary: str, tmp: Path, config: dict[str, Any]) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port with ``config`` and a TSDB in ``tmp``; stopped after."""
    root = tmp / "prometheus"
    (root / "data").mkdir(parents=True)
    config_path = root / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    process = _start("prometheus", argv, port, root / "prometheus.log", dict(os.environ))
    try:
        process.wait_ready("/-/ready")
        yield Prometheus(process)
    finally:
        process.stop()


# requests ------------------------------------------------------------------------------------
def _json_value(spec: dict[str, Any], value: Any) -> Any:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if spec.get("kind") == "datetime":
        return pd.Timestamp(value).isoformat()
    if spec["dtype"] == "string":
        return str(value)
    return float(value)  # bool -> 0.0 / 1.0, ints -> floats


def records(frame: pd.DataFrame, signature: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for the records route, one field per signature input: numbers as floats, times as
    ISO 8601, categories as strings, missing values as null."""
    inputs = signature["inputs"]
    return [
        {spec["name"]: _json_value(spec, row[spec["name"]]) for spec in inputs}
        for row in frame.to_dict("records")
    ]


# PromQL --------------------------------------------------------------------------------------
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def exported_names(metrics: Metrics | None = None) -> set[str]:
    """Every sample name the catalogue can export (``_total``, ``_bucket``, ... included)."""
    names: set[str] = set()
    for family in (metrics or Metrics()).registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (inside ``{}`` or a grouping clause) or durations (inside ``[]``)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    found = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in KEYWORDS:
            found.add(name)
    return found


# the dashboard -------------------------------------------------------------------------------
def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed panels included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title / refId, expr)`` for every PromQL target."""
    return [
        (f"{panel.get('title')} / {target.get('refId')}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


GRAFANA_RANGES = re.compile(r"\$\{?__(rate_interval|interval|range)\}?")
GRAFANA_VARIABLES = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")


def concrete(expr: str) -> str:
    """A Grafana expression with its variables filled in, as plain PromQL: ranges become 1m
    and every template variable (only ever used in regex matchers) matches everything."""
    return GRAFANA_VARIABLES.sub(".*", GRAFANA_RANGES.sub("1m", expr))
