"""The slim `serve` image's promise, checked without Docker: `ferry serve` runs, answers and
drains with only the packages deploy/docker/requirements-serve.txt installs.

The image installs requirements-serve.txt and then Ferry with ``--no-deps``. Here the same set
is computed from this environment's package metadata (the requirements and everything they
require, extras and markers included), and every other installed package is made
unimportable in the server's processes by ``slim/sitecustomize.py`` (it is put first on
``PYTHONPATH``, so spawned workers get it too). A bundle is trained and registered in this
process (the lab needs scikit-learn); the server only ever sees the registry.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
REQUIREMENTS = ROOT / "deploy" / "docker" / "requirements-serve.txt"
SLIM = Path(__file__).resolve().parent / "slim"
FERRY = Path(sys.executable).parent / "ferry"
SRC = (ROOT / "src" / "ferry").resolve()
# The lab: what the serve image must never contain, whatever pulls it in.
LAB_MODULES = {
    "sklearn", "skl2onnx", "onnxmltools", "lightgbm", "optuna", "matplotlib", "pandas",
    "pyarrow", "onnx",
}
READY_TIMEOUT_S = 120.0
SPEC = {
    "name": "fraud",
    "task": "classification",
    "data": {"source": "builtin:fraud", "target": "is_fraud", "rows": 3000},
    "search": {"families": ["logistic"], "trials": 1, "time_budget_s": 10, "folds": 2},
    "constraints": {"max_latency_p99_ms": 50},
}


def requirement_lines(path: Path = REQUIREMENTS) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def serve_closure(requirements: list[Requirement]) -> set[str]:
    """Installed distributions the requirements bring in (canonical names), transitively.

    A requirement that is not installed here (s3fs is not in the dev extra) is skipped: the
    server under test does not touch S3, so whatever it would bring is not needed either."""
    found: set[str] = set()
    done: set[tuple[str, str]] = set()
    todo = [(req, "") for req in requirements]
    while todo:
        req, extra = todo.pop()
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.add(name)
        for wanted in {"", *req.extras}:
            if (name, wanted) in done:
                continue
            done.add((name, wanted))
            todo += [(Requirement(line), wanted) for line in dist.requires or []]
    return found


def blocked_modules(closure: set[str]) -> set[str]:
    """Top-level modules of installed distributions outside the closure (Ferry excepted)."""
    owners = metadata.packages_distributions()
    blocked = set()
    for module, dists in owners.items():
        names = {canonicalize_name(d) for d in dists}
        if not names & closure and "ferry-ml" not in names and module.isidentifier():
            blocked.add(module)
    return blocked


@pytest.fixture(scope="module")
def blocked() -> set[str]:
    closure = serve_closure(requirement_lines())
    assert {"onnxruntime", "uvicorn", "grpcio", "sqlalchemy", "typer"} <= closure, closure
    modules = blocked_modules(closure)
    installed = {m for m in LAB_MODULES if m in metadata.packages_distributions()}
    # The image promise itself: no lab package is required, even indirectly.
    assert installed <= modules, f"the serve requirements pull in {installed - modules}"
    return modules


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Home:
    path: Path
    spec: Path
    bundle: Path
    rows: list[dict[str, Any]]


def _json_rows(manifest: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Complete rows (no missing cells) as a client sends them, from data not trained on."""
    from ferry.data.load import load_dataset

    frame = load_dataset("builtin:fraud", rows=400, seed=11).dropna().head(count)
    rows = []
    for _, row in frame.iterrows():
        record: dict[str, Any] = {}
        for spec in manifest["signature"]["inputs"]:
            value = row[spec["name"]]
            if spec.get("kind") == "datetime":
                record[spec["name"]] = value.isoformat()
            elif spec.get("kind") == "boolean":
                record[spec["name"]] = bool(value)
            elif spec["dtype"] == "string":
                record[spec["name"]] = str(value)
            else:
                record[spec["name"]] = float(value)
        rows.append(record)
    return rows


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """A FERRY_HOME whose registry holds fraud:1 aliased production (trained here, with the
    lab), and the spec the server gets with --spec."""
    from ferry.core.spec import parse_spec
    from ferry.lab import train
    from ferry.registry import open_registry

    path = tmp_path_factory.mktemp("slim-home")
    spec_file = path / "ferry.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    registry = open_registry(f"sqlite:///{path}/registry.db", str(path / "artifacts"))
    try:
        outcome = train(parse_spec(SPEC), path / "run", registry=registry, actor="slim-test")
        assert outcome.version is not None
        registry.set_alias("fraud", "production", outcome.version.version, actor="slim-test")
        manifest = outcome.version.manifest
    finally:
        registry.close()
    return Home(path, spec_file, outcome.bundle_dir, _json_rows(manifest, 5))


def slim_env(home: Path, blocked: set[str], log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "SLIM_"))}
    env.update(
        FERRY_HOME=str(home),
        FERRY_ACTOR="slim-test",
        PYTHONPATH=os.pathsep.join([str(SLIM), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        SLIM_BLOCKED=",".join(sorted(blocked)),
        SLIM_BLOCK_LOG=str(log),
        COLUMNS="200",
        NO_COLOR="1",
    )
    return env


def ferry_attempts(log: Path) -> list[dict[str, Any]]:
    """Refused imports that Ferry's own code asked for (a library probing for an optional
    package it can do without is what the real image does too, and is not counted)."""
    if not log.exists():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines() if line]
    return [r for r in records if Path(r["importer"]).resolve().is_relative_to(SRC)]


def run_slim(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FERRY), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_sitecustomize_blocks_what_it_is_told(tmp_path: Path) -> None:
    """The harness itself: a blocked module cannot be imported, the refusal is logged with
    its importer, and an allowed module still imports."""
    log = tmp_path / "blocked.jsonl"
    env = slim_env(tmp_path, {"sklearn"}, log)
    code = (
        "import yaml\n"
        "try:\n    import sklearn.base\nexcept ModuleNotFoundError as e:\n    print(e.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sklearn"]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["module"] for r in records] == ["sklearn"]
    assert records[0]["importer"] == "<string>"


def test_cli_imports_and_help_without_the_lab(blocked: set[str], tmp_path: Path) -> None:
    log = tmp_path / "blocked.jsonl"
    code = (
        "import sys\n"
        "import ferry.serving.server, ferry.monitoring.monitor, ferry.monitoring.alerts\n"
        "import ferry.monitoring.predlog_sql, ferry.registry, ferry.cli.app\n"
        f"lab = [m for m in sys.modules if m.partition('.')[0] in {sorted(LAB_MODULES)!r}]\n"
        "assert not lab, lab\n"
        "sys.argv = ['ferry', 'serve', '--help']\n"
        "ferry.cli.app.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=slim_env(tmp_path, blocked, log),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Serve models over Open Inference Protocol V2" in done.stdout
    assert "--drain-delay" in done.stdout
    assert ferry_attempts(log) == []


def test_registry_and_rules_commands_without_the_lab(
    blocked: set[str], home: Home, tmp_path: Path
) -> None:
    log = tmp_path / "blocked.jsonl"
    env = slim_env(home.path, blocked, log)
    shown = run_slim(env, "registry", "show", "fraud@production")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "fraud" in shown.stdout and "production" in shown.stdout
    rules = run_slim(env, "monitor", "rules", str(home.spec))
    assert rules.returncode == 0, rules.stderr
    names = [r["alert"] for g in yaml.safe_load(rules.stdout)["groups"] for r in g["rules"]]
    assert "FerryErrorRateHigh" in names and "FerryLatencyP99High" in names
    assert ferry_attempts(log) == []


def _reference(bundle: Path, rows: list[dict[str, Any]]) -> np.ndarray:
    """Class probabilities straight from ONNX Runtime on the bundle's graph."""
    import onnxruntime as ort

    manifest = json.loads((bundle / "manifest.json").read_text())
    feeds = {}
    for spec in manifest["signature"]["inputs"]:
        values = [row[spec["name"]] for row in rows]
        if spec.get("kind") == "datetime":
            stamps = [datetime.fromisoformat(v).replace(tzinfo=UTC) for v in values]
            array = np.array([s.timestamp() for s in stamps], dtype=np.float64)
        elif spec["dtype"] == "string":
            array = np.array(values, dtype=object)
        else:
            array = np.array(values, dtype=np.dtype(spec["dtype"]))
        feeds[spec["name"]] = array.reshape(-1, 1)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, feeds), strict=True))
    return np.asarray(outputs["probabilities"])


@pytest.fixture
def slim_server(
    blocked: set[str], home: Home, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, Path]]:
    port = free_port()
    log = tmp_path / "blocked.jsonl"
    output = tmp_path / "serve.log"
    args = [
        "serve", "fraud@production", "--host", "127.0.0.1", "--port", str(port),
        "--grpc-port", str(free_port()), "--workers", "2", "--spec", str(home.spec),
        "--drain-delay", "0.2", "--log-url", f"sqlite:///{tmp_path}/predictions.db",
    ]  # fmt: skip
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [str(FERRY), *args],
            env=slim_env(home.path, blocked, log),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc, port, log, output
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, output: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"server exited {proc.returncode}:\n{output.read_text()}"
            try:
                if client.get(f"{url}/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # between readiness probes, not instead of them
    raise AssertionError(f"not ready within {READY_TIMEOUT_S} s:\n{output.read_text()}")


def test_serves_a_registry_model_without_the_lab(
    slim_server: tuple[subprocess.Popen[bytes], int, Path, Path], home: Home
) -> None:
    """Two workers, monitoring on, a database prediction log and the spec's alert rules: the
    production set-up of the compose file and the Kubernetes Deployment, minus PostgreSQL/S3."""
    proc, port, log, output = slim_server
    url = f"http://127.0.0.1:{port}"
    _wait_ready(proc, url, output)
    with httpx.Client(timeout=30) as client:
        answer = client.post(f"{url}/v1/models/fraud:predict", json={"instances": home.rows})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        probabilities = [[p["probabilities"][k] for k in ("0", "1")] for p in predictions]
        np.testing.assert_allclose(
            probabilities, _reference(home.bundle, home.rows), rtol=1e-5, atol=1e-6
        )
        assert client.get(f"{url}/v2/models/fraud/ready").status_code == 200
        metrics = client.get(f"{url}/metrics")
        assert metrics.status_code == 200
        assert "ferry_serving_request_duration_seconds" in metrics.text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, output.read_text()
    text = output.read_text()
    assert "Traceback" not in text, text
    assert ferry_attempts(log) == [], text
