"""Helpers for the ``ferry serve`` end-to-end tests: a registry with two versions of ``fraud``,
real server processes on free ports, and raw rows turned into request bodies.

Test modules import this file by path (``sys.path``), not through the e2e conftest, so the
server tests stay independent of the CLI tests' fixtures.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

FERRY = Path(sys.executable).parent / "ferry"
ACTOR = "e2e-serve"
# Start-up is interpreter + imports + registry + ONNX Runtime: seconds on a busy 2-core box.
READY_TIMEOUT_S = 120.0
SEARCH = {"trials": 1, "time_budget_s": 10, "folds": 2}
DATA = {"source": "builtin:fraud", "target": "is_fraud", "rows": 3000}
# Version 2 trains on other rows without class weights, so its probabilities differ from v1's
# (a hist_gb search would do too, but costs ~15 s on two shared cores against ~4 s).
VERSIONS: list[dict[str, Any]] = [
    {"data": DATA, "search": {"families": ["logistic"], **SEARCH}},
    {
        "data": {**DATA, "rows": 1500},
        "search": {"families": ["logistic"], "class_weight": "none", **SEARCH},
    },
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ferry_env(home: Path) -> dict[str, str]:
    """This process's environment with every ``FERRY_*`` replaced: a private home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    # Wide and plain: a one-line error stays one line when stderr is not a terminal.
    env.update(FERRY_HOME=str(home), FERRY_ACTOR=ACTOR, COLUMNS="400", NO_COLOR="1", TERM="dumb")
    return env


def prepare_home(home: Path, versions: int = 2) -> dict[int, list[str]]:
    """Train and register ``fraud`` versions 1..``versions`` (``production`` -> 1) through the
    lab API, in the same registry a server with ``FERRY_HOME=home`` opens. Returns each
    version's input names."""
    from ferry.core.spec import parse_spec
    from ferry.lab import train
    from ferry.registry import open_registry

    home.mkdir(parents=True, exist_ok=True)
    registry = open_registry(f"sqlite:///{home}/registry.db", str(home / "artifacts"))
    inputs: dict[int, list[str]] = {}
    try:
        for number, sections in enumerate(VERSIONS[:versions], start=1):
            spec = parse_spec({"name": "fraud", "task": "classification", **sections})
            outcome = train(spec, home / f"run-{number}", registry=registry, actor=ACTOR)
            assert outcome.version is not None and outcome.version.version == number
            signature = outcome.version.manifest["signature"]
            inputs[number] = [spec_["name"] for spec_ in signature["inputs"]]
        registry.set_alias("fraud", "production", 1, actor=ACTOR)
    finally:
        registry.close()
    return inputs


def alias_moved_at(home: Path, version: int, alias: str = "production") -> float:
    """When (epoch seconds) the registry recorded the newest move of ``fraud@alias`` to
    ``version``: the moment a server can first see it, unlike the CLI's exit."""
    from ferry.registry import open_registry

    registry = open_registry(f"sqlite:///{home}/registry.db", str(home / "artifacts"))
    try:
        for event in registry.events("fraud", limit=50):  # newest first
            if event.details.get("alias") == alias and event.details.get("to") == version:
                return event.at.timestamp()
    finally:
        registry.close()
    raise AssertionError(f"no event moves fraud@{alias} to {version}")


def run_ferry(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FERRY), *args],
        env=ferry_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@dataclass
class Server:
    """A ``ferry serve`` process started by a test; its output goes to a log file."""

    proc: subprocess.Popen[bytes]
    port: int
    grpc_port: int
    log: Path
    startup_statuses: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Poll ``/v2/health/ready`` until 200; the seconds it took. Fails fast if it exits."""
        started = time.perf_counter()
        deadline = started + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() < deadline:
                code = self.proc.poll()
                assert code is None, f"server exited with {code} before ready:\n{self.output()}"
                try:
                    if client.get(f"{self.url}/v2/health/ready").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.05)  # between readiness probes, not instead of them
        raise AssertionError(f"server not ready within {timeout} s:\n{self.output()}")

    def statuses_until_answered(self, rows: list[dict[str, Any]]) -> list[int]:
        """Predict from the moment the process starts until an answer is 200: the statuses
        on the way. A refused connection (port not bound yet) is not an answer; a request
        the kernel holds for a worker waits for it."""
        deadline = time.perf_counter() + READY_TIMEOUT_S
        statuses: list[int] = []
        with httpx.Client(timeout=READY_TIMEOUT_S) as client:
            while time.perf_counter() < deadline and 200 not in statuses:
                code = self.proc.poll()
                assert code is None, f"server exited with {code}:\n{self.output()}"
                with suppress(httpx.ConnectError):  # not listening yet: no answer
                    statuses.append(predict(client, self.url, rows).status_code)
                if 200 not in statuses:
                    time.sleep(0.05)  # between attempts, not instead of them
        return statuses

    def terminate(self) -> float:
        """SIGTERM now; returns the moment it was sent (``time.perf_counter``)."""
        self.proc.send_signal(signal.SIGTERM)
        return time.perf_counter()

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it does not exit; workers are stopped by pid."""
        if self.proc.poll() is None:
            children = worker_pids(self.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for pid in children:
                    with_missing_ok(os.kill, pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait(timeout=10)


def with_missing_ok(call: Any, *args: Any) -> None:
    with suppress(ProcessLookupError):
        call(*args)


def send_unread(port: int, rows: list[dict[str, Any]]) -> list[http.client.HTTPConnection]:
    """One records request per row, each sent in full on its own connection; the answers are
    left for the caller to read later (``getresponse``)."""
    connections = []
    for row in rows:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = json.dumps({"instances": [row]})
        connection.request(
            "POST", "/v1/models/fraud:predict", body, {"Content-Type": "application/json"}
        )
        connections.append(connection)
    return connections


class ExitClock:
    """Notes when a process exits, from a thread watching it from now on."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.at: float | None = None
        self.thread = threading.Thread(target=self._wait)
        self.thread.start()

    def _wait(self) -> None:
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=120)
            self.at = time.perf_counter()

    def seconds_after(self, start: float) -> float:
        self.thread.join()
        assert self.at is not None, "the process did not exit"
        return self.at - start


def start_server(home: Path, tmp: Path, *args: str, ref: str = "fraud@production") -> Server:
    port, grpc_port = free_port(), free_port()
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(FERRY), "serve", ref, "--port", str(port), "--grpc-port", str(grpc_port), *args],
            env=ferry_env(home),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Server(proc, port, grpc_port, log)


@contextmanager
def serving(home: Path, tmp: Path, *args: str) -> Iterator[Server]:
    """A started, ready server that is always stopped afterwards."""
    server = start_server(home, tmp, *args)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def worker_pids(pid: int) -> list[int]:
    """The multiprocessing worker children of a server (not its resource tracker)."""
    try:
        children = children_of(pid)
    except FileNotFoundError:
        return []
    return [c for c in children if "spawn_main" in cmdline(c)]


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def sample_rows(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """Complete raw rows from the built-in fraud data, JSON-ready: times as epoch seconds,
    booleans as 0/1 (no missing values, so V2 tensors and records carry the same numbers)."""
    from ferry.data.load import load_dataset

    frame = load_dataset("builtin:fraud", rows=max(count * 4, 200), seed=seed).dropna()
    frame = frame.drop(columns=["is_fraud", "transaction_id"]).head(count)
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    frame["timestamp"] = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    frame["card_present"] = frame["card_present"].astype(float)
    assert len(frame) == count
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def only(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    return [{n: row[n] for n in names} for row in rows]


def predict(
    client: httpx.Client, url: str, rows: list[dict[str, Any]], version: str | None = None
) -> httpx.Response:
    path = "/v1/models/fraud" + (f"/versions/{version}" if version else "") + ":predict"
    return client.post(url + path, json={"instances": rows})


def probabilities(body: dict[str, Any]) -> np.ndarray:
    """``[[p0, p1], ...]`` from a records-route answer."""
    return np.asarray([[p["probabilities"][k] for k in ("0", "1")] for p in body["predictions"]])
