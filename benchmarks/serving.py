"""Serving speed: Ferry beside a thin FastAPI + ONNX Runtime endpoint and in-process ORT calls.

All on the fraud bundle from ``ferry quickstart`` (trained here with a short budget, or reused
with ``--bundle``), all in one run on this machine:

- ``in-process``  ONNX Runtime ``session.run`` on 1 and 64 rows (no server), and the two
                  request paths without HTTP: Ferry's (JSON parse, V2 decode + validation,
                  quality counts, graph, output shaping, JSON encode) and the thin one's;
- ``thin``        the reference: a minimal FastAPI app on uvicorn (1 worker, uvloop, httptools)
                  that parses the same V2 body with orjson, builds feeds with numpy, runs the
                  same ``model.onnx`` (1 intra-op thread) and returns JSON; no validation;
- ``ferry``       ``ferry serve BUNDLE`` with 1 and 2 workers, dynamic batching on and off.

REST load comes from ``wrk -t1`` with ``serving_post.lua`` (one V2 body, single row unless
said otherwise); gRPC load from an asyncio ``grpc.aio`` client in this process (``ModelInfer``,
typed contents, one row), which competes with the server for the same cores. Each point runs
``--duration`` seconds (default 20) at concurrency 1 and 32 after a short warm-up. Ratios are
to the thin reference at the same concurrency and rows. The server's CPU time per request and
the CPU used by other processes on the machine during each point are measured from ``/proc``.

Targets (Ferry, 1 worker, batching on, validation on, concurrency 32): REST req/s >= 0.8x the
thin reference and p99 <= 1.5x its p99; gRPC req/s >= REST req/s; a 64-row request costs
<= 2x a 1-row request (mean latency at concurrency 1). With ``--profile`` the Ferry server is
then sampled with py-spy under the same REST and gRPC load and the hottest functions are added.
Results go to ``benchmarks/results/serving.{md,json}``.

    python benchmarks/serving.py                         # full run (~8 min), trains the bundle
    python benchmarks/serving.py --quick --bundle DIR    # 5 s points on an existing bundle
    python benchmarks/serving.py --wait-load 900 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import orjson

from ferry.core.bundle import MODEL, verify_bundle
from ferry.core.signature import InputSpec, Signature
from ferry.serving.batching import BatchConfig
from ferry.serving.dataplane import DataPlane
from ferry.serving.pool import ModelPool, PoolConfig
from ferry.serving.proto import grpc_predict_v2_pb2 as pb
from ferry.serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from ferry.serving.runtime import session_options

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LUA = HERE / "serving_post.lua"
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
BIG_ROWS = 64
WARMUP_S = 2.0
PARTS = ("inprocess", "thin", "ferry1", "ferry2", "profile")

THIN_APP = '''
"""The thin reference: what a hand-written FastAPI endpoint would do, without validation."""
import os

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request, Response

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(
    os.environ["THIN_MODEL"], options, providers=["CPUExecutionProvider"]
)
DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(string)": object}
DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64"}
INPUTS = {i.name: DTYPES[i.type] for i in session.get_inputs()}
OUTPUTS = [o.name for o in session.get_outputs()]
app = FastAPI()


@app.get("/v2/health/ready")
async def ready() -> dict:
    return {"ready": True}


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    body = orjson.loads(await request.body())
    feeds = {
        t["name"]: np.asarray(t["data"], dtype=INPUTS[t["name"]]).reshape(-1, 1)
        for t in body["inputs"]
    }
    values = session.run(OUTPUTS, feeds)
    outputs = [
        {"name": n, "datatype": DATATYPES[str(v.dtype)], "shape": list(v.shape),
         "data": v.ravel().tolist()}
        for n, v in zip(OUTPUTS, values)
    ]
    return Response(orjson.dumps({"model_name": name, "outputs": outputs}),
                    media_type="application/json")
'''

THIN_GRPC = '''
"""The thin gRPC reference: a hand-written grpc.aio ModelInfer, without validation."""
import asyncio
import os
import sys

import grpc
import numpy as np
import onnxruntime as ort

from ferry.serving.proto import grpc_predict_v2_pb2 as pb
from ferry.serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(
    os.environ["THIN_MODEL"], options, providers=["CPUExecutionProvider"]
)
DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(string)": object,
}
FIELDS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "BYTES": "bytes_contents",
}
DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64"}
INPUTS = {i.name: DTYPES[i.type] for i in session.get_inputs()}
OUTPUTS = [o.name for o in session.get_outputs()]


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request, context):
        feeds = {}
        for tensor in request.inputs:
            values = getattr(tensor.contents, FIELDS[tensor.datatype])
            if tensor.datatype == "BYTES":
                values = [v.decode() for v in values]
            feeds[tensor.name] = np.asarray(values, dtype=INPUTS[tensor.name]).reshape(-1, 1)
        response = pb.ModelInferResponse(model_name=request.model_name)
        for name, value in zip(OUTPUTS, session.run(OUTPUTS, feeds), strict=True):
            datatype = DATATYPES[str(value.dtype)]
            out = response.outputs.add(name=name, datatype=datatype, shape=list(value.shape))
            getattr(out.contents, FIELDS[datatype]).extend(value.ravel().tolist())
        return response


async def main() -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()


asyncio.run(main())
'''


# --- results ----------------------------------------------------------------------------


@dataclass
class Point:
    """One measured load point."""

    server: str
    protocol: str
    concurrency: int
    rows: int
    requests: int
    seconds: float
    rps: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    server_cpu_us: float | None = None  # server CPU time per request (all its processes)
    client_cores: float | None = None  # load generator CPU, in cores
    others_cores: float | None = None  # CPU used by everything else on the machine, in cores
    load1: float = 0.0
    ratio_rps: float | None = None
    ratio_p99: float | None = None

    def key(self) -> tuple[str, str, int, int]:
        return self.server, self.protocol, self.concurrency, self.rows


@dataclass
class Run:
    date: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    points: list[Point] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)


# --- CPU accounting from /proc ----------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime in ticks) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def _tree_ticks(root: int | None) -> int:
    if root is None:
        return 0
    table = _proc_table()
    pids, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (pp, _) in table.items() if pp == parent and p not in pids]
        pids.update(children)
        frontier += children
    return sum(table[p][1] for p in pids if p in table)


def _busy_ticks() -> int:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return sum(values) - values[3] - values[4]  # minus idle and iowait


def _own_seconds() -> float:
    """CPU of this process (the gRPC client) and of its finished children (wrk)."""
    me = os.times()
    return me.user + me.system + me.children_user + me.children_system


@dataclass
class CpuUse:
    server_s: float = 0.0
    client_s: float = 0.0
    others_s: float = 0.0


@contextmanager
def cpu_meter(server_pid: int | None) -> Iterator[CpuUse]:
    use = CpuUse()
    busy, tree, own = _busy_ticks(), _tree_ticks(server_pid), _own_seconds()
    yield use
    use.server_s = (_tree_ticks(server_pid) - tree) / CLK_TCK
    use.client_s = _own_seconds() - own
    use.others_s = max(0.0, (_busy_ticks() - busy) / CLK_TCK - use.server_s - use.client_s)


# --- the bundle and the requests --------------------------------------------------------


def train_bundle(workdir: Path) -> Path:
    from ferry.cli.specs import QUICKSTART
    from ferry.core.spec import parse_spec
    from ferry.lab import train

    spec = parse_spec({**QUICKSTART, "search": {**QUICKSTART["search"], "time_budget_s": 20}})
    print("training the quickstart fraud bundle (20 s search budget) ...", flush=True)
    return Path(train(spec, workdir / "run").bundle_dir)


DATATYPE = {"float32": "FP32", "float64": "FP64", "string": "BYTES"}


def _value(spec: InputSpec, rng: np.random.Generator) -> Any:
    if spec.dtype == "string":
        return str(rng.choice(spec.categories or ["unknown"]))
    low = 0.0 if spec.min is None else spec.min
    high = low + 100 if spec.max is None else spec.max
    if spec.kind == "boolean":
        return float(rng.integers(0, 2))
    if spec.kind == "datetime":
        return float(round(rng.uniform(low, high)))
    return round(float(rng.uniform(low, low + (high - low) * 0.05)), 2)


def make_rows(signature: Signature, count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{s.name: _value(s, rng) for s in signature.inputs} for _ in range(count)]


def v2_body(signature: Signature, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": s.name,
                "shape": [len(rows), 1],
                "datatype": DATATYPE[s.dtype],
                "data": [r[s.name] for r in rows],
            }
            for s in signature.inputs
        ]
    }


def grpc_request(name: str, signature: Signature, rows: list[dict[str, Any]]) -> Any:
    request = pb.ModelInferRequest(model_name=name)
    for spec in signature.inputs:
        tensor = request.inputs.add(
            name=spec.name, datatype=DATATYPE[spec.dtype], shape=[len(rows), 1]
        )
        values = [r[spec.name] for r in rows]
        if spec.dtype == "string":
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        elif spec.dtype == "float64":
            tensor.contents.fp64_contents.extend(values)
        else:
            tensor.contents.fp32_contents.extend(values)
    return request


def ort_feeds(signature: Signature, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    kinds = {"float32": np.float32, "float64": np.float64, "string": object}
    return {
        s.name: np.asarray([r[s.name] for r in rows], dtype=kinds[s.dtype]).reshape(-1, 1)
        for s in signature.inputs
    }


# --- servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http(url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    label: str
    command: list[str]
    env: dict[str, str]
    port: int
    grpc_port: int | None
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def ready(self) -> bool:
        if not self.port:  # gRPC only: the process says READY when it listens
            return "READY" in self.log.read_text()
        try:
            return http(f"{self.base}/v2/health/ready", timeout=1.0)[0] == 200
        except OSError:
            return False

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.label} exited at start:\n{self.log.read_text()[-3000:]}")
            if self.ready():
                return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{self.label} not ready after {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def ferry_server(
    bundle: Path, workdir: Path, workers: int, batching: bool, monitoring: bool = True
) -> Server:
    port, grpc_port = free_port(), free_port()
    label = f"ferry {workers}w batching {'on' if batching else 'off'}"
    label += "" if monitoring else " no-monitoring"
    command = [str(BIN / "ferry"), "serve", str(bundle), "--host", HOST, "--port", str(port)]
    command += ["--grpc-port", str(grpc_port), "--workers", str(workers)]
    command += ["--drain-delay", "0", "--grace", "5"]
    if not batching:
        command.append("--no-batching")
    if not monitoring:
        command.append("--no-monitoring")
    env = {**os.environ, "FERRY_HOME": str(workdir / "home")}
    return Server(label, command, env, port, grpc_port, workdir / f"{label.replace(' ', '_')}.log")


def thin_server(bundle: Path, workdir: Path) -> Server:
    (workdir / "thin_app.py").write_text(THIN_APP)
    port = free_port()
    command = [str(BIN / "uvicorn"), "thin_app:app", "--app-dir", str(workdir)]
    command += ["--host", HOST, "--port", str(port), "--workers", "1", "--loop", "uvloop"]
    command += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
    env = {**os.environ, "THIN_MODEL": str(bundle / MODEL), "OMP_NUM_THREADS": "1"}
    return Server("thin", command, env, port, None, workdir / "thin.log")


def thin_grpc_server(bundle: Path, workdir: Path) -> Server:
    (workdir / "thin_grpc.py").write_text(THIN_GRPC)
    port = free_port()
    command = [sys.executable, str(workdir / "thin_grpc.py"), str(port)]
    env = {**os.environ, "THIN_MODEL": str(bundle / MODEL), "OMP_NUM_THREADS": "1"}
    return Server("thin", command, env, 0, port, workdir / "thin_grpc.log")


def _data_plane(bundle: Path, workdir: Path) -> DataPlane:
    """Ferry's data plane as the server builds it, without batching or monitoring hooks."""
    pool = ModelPool(None, workdir / "cache", PoolConfig(batch=BatchConfig(enabled=False)))
    model = asyncio.run(pool.add(str(bundle)))
    model.batcher.inline = True  # graph calls on the caller's thread: we time the CPU path
    return DataPlane(pool)


def _drive(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the data plane with inline graph calls)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("the data plane suspended: cannot time it synchronously")


# --- load generators --------------------------------------------------------------------


def wrk(url: str, body: Path, concurrency: int, seconds: float) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency"]
    command += ["--timeout", "10s", "-s", str(LUA), url]
    done = subprocess.run(
        command, env={**os.environ, "FERRY_BENCH_BODY": str(body)}, capture_output=True, text=True
    )
    match = re.search(r"^FERRY_BENCH (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode or not match:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(match.group(1)))


async def _grpc_load(
    target: str, request: Any, concurrency: int, seconds: float
) -> tuple[list[float], int, float]:
    count = 1 if concurrency == 1 else 4  # separate connections so several workers share it
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(count)
    ]
    stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in channels]
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(stub: Any) -> None:
        nonlocal errors
        while (started := time.perf_counter()) < stop_at:
            try:
                await stub.ModelInfer(request, timeout=10)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker(stubs[i % count]) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    for channel in channels:
        await channel.close()
    return latencies, errors, elapsed


def grpc_load(target: str, request: Any, concurrency: int, seconds: float) -> dict[str, Any]:
    latencies, errors, elapsed = asyncio.run(_grpc_load(target, request, concurrency, seconds))
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors,
    }


# --- the benchmark ----------------------------------------------------------------------


@dataclass
class Bench:
    bundle: Path
    workdir: Path
    seconds: float
    run: Run
    name: str = ""
    signature: Signature = field(init=False)
    bodies: dict[str, Path] = field(default_factory=dict)
    grpc_one: Any = None

    def __post_init__(self) -> None:
        manifest = verify_bundle(self.bundle)
        self.name, self.signature = manifest.name, manifest.signature
        self.estimator = manifest.lineage.estimator or "?"
        one, big = make_rows(self.signature, 1), make_rows(self.signature, BIG_ROWS, seed=1)
        payloads = {
            "v2_1": v2_body(self.signature, one),
            f"v2_{BIG_ROWS}": v2_body(self.signature, big),
            "records_1": {"instances": one},
        }
        for key, payload in payloads.items():
            self.bodies[key] = self.workdir / f"{key}.json"
            self.bodies[key].write_bytes(orjson.dumps(payload))
        self.grpc_one = grpc_request(self.name, self.signature, one)
        self.expected = self._expected(one)

    def _expected(self, rows: list[dict[str, Any]]) -> np.ndarray:
        session = ort.InferenceSession(str(self.bundle / MODEL), session_options(1))
        return np.asarray(session.run(["probabilities"], ort_feeds(self.signature, rows))[0])

    def add(self, point: Point) -> None:
        self.run.points.append(point)
        print(
            f"  {point.server:<22} {point.protocol:<13} c={point.concurrency:<3} "
            f"rows={point.rows:<3} {point.rps:>10,.0f} req/s  p50 {point.p50_ms:7.3f} ms  "
            f"p99 {point.p99_ms:7.3f} ms  errors {point.errors}",
            flush=True,
        )

    # in-process ------------------------------------------------------------------------

    def _time_calls(self, label: str, protocol: str, rows: int, call: Callable[[], Any]) -> None:
        seconds = min(self.seconds, 5.0)
        for _ in range(200):
            call()
        samples: list[int] = []
        with cpu_meter(None) as use:
            began = time.perf_counter()
            stop_at = began + seconds
            while time.perf_counter() < stop_at:
                started = time.perf_counter_ns()
                call()
                samples.append(time.perf_counter_ns() - started)
            elapsed = time.perf_counter() - began
        ms = np.asarray(samples) / 1e6
        self.add(
            Point(
                label,
                protocol,
                1,
                rows,
                len(samples),
                elapsed,
                len(samples) / elapsed,
                float(ms.mean()),
                float(np.percentile(ms, 50)),
                float(np.percentile(ms, 99)),
                client_cores=use.client_s / elapsed,
                others_cores=use.others_s / elapsed,
                load1=os.getloadavg()[0],
            )
        )

    def in_process(self) -> None:
        print("in-process", flush=True)
        session = ort.InferenceSession(str(self.bundle / MODEL), session_options(1))
        names = [o.name for o in session.get_outputs()]
        for rows in (1, BIG_ROWS):
            feeds = ort_feeds(self.signature, make_rows(self.signature, rows))
            self._time_calls(
                "ort session.run", "in-process", rows, lambda f=feeds: session.run(names, f)
            )
        plane = _data_plane(self.bundle, self.workdir)
        body = self.bodies["v2_1"].read_bytes()
        thin_types = {"FP32": np.float32, "FP64": np.float64, "BYTES": object}

        def ferry_path() -> bytes:
            request = orjson.loads(body)
            response = _drive(plane.infer(self.name, None, request))
            return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)

        def thin_path() -> bytes:
            request = orjson.loads(body)
            feeds = {
                t["name"]: np.asarray(t["data"], dtype=thin_types[t["datatype"]]).reshape(-1, 1)
                for t in request["inputs"]
            }
            values = session.run(names, feeds)
            outputs = [
                {"name": n, "shape": list(v.shape), "data": v.ravel().tolist()}
                for n, v in zip(names, values, strict=True)
            ]
            return orjson.dumps({"model_name": self.name, "outputs": outputs})

        self._time_calls("ferry data plane", "in-process", 1, ferry_path)
        self._time_calls("thin request path", "in-process", 1, thin_path)

    # over the wire ---------------------------------------------------------------------

    def _check(self, server: Server, url: str, body: Path, key: str) -> None:
        status, raw = http(url, body.read_bytes())
        if status != 200:
            raise SystemExit(f"{server.label}: {url} answered {status}: {raw[:300]!r}")
        payload = orjson.loads(raw)
        if key == "outputs":
            proba = next(o for o in payload["outputs"] if o["name"] == "probabilities")["data"]
        else:
            proba = list(payload["predictions"][0]["probabilities"].values())
        if not np.allclose(np.asarray(proba)[:2], self.expected.reshape(-1)[:2], atol=1e-5):
            raise SystemExit(f"{server.label}: wrong answer from {url}: {raw[:300]!r}")

    def _rest(self, server: Server, protocol: str, body: str, concurrency: int) -> None:
        path = (
            f"/v1/models/{self.name}:predict"
            if protocol == "rest records"
            else (f"/v2/models/{self.name}/infer")
        )
        rows = BIG_ROWS if body.endswith(f"_{BIG_ROWS}") else 1
        load1 = os.getloadavg()[0]
        pid = server.process.pid if server.process else None
        with cpu_meter(pid) as use:
            result = wrk(server.base + path, self.bodies[body], concurrency, self.seconds)
        seconds = result["duration_us"] / 1e6
        errors = sum(result[k] for k in result if k.endswith("errors") or k == "timeouts")
        self.add(
            Point(
                server.label,
                protocol,
                concurrency,
                rows,
                result["requests"],
                seconds,
                result["requests"] / seconds,
                result["mean_us"] / 1000,
                result["p50_us"] / 1000,
                result["p99_us"] / 1000,
                errors,
                use.server_s / max(result["requests"], 1) * 1e6,
                use.client_s / seconds,
                use.others_s / seconds,
                load1,
            )
        )

    def _grpc(self, server: Server, concurrency: int) -> None:
        target = f"{HOST}:{server.grpc_port}"
        load1 = os.getloadavg()[0]
        pid = server.process.pid if server.process else None
        with cpu_meter(pid) as use:
            result = grpc_load(target, self.grpc_one, concurrency, self.seconds)
        seconds = result["seconds"]
        self.add(
            Point(
                server.label,
                "grpc",
                concurrency,
                1,
                result["requests"],
                seconds,
                result["requests"] / seconds,
                result["mean_ms"],
                result["p50_ms"],
                result["p99_ms"],
                result["errors"],
                use.server_s / max(result["requests"], 1) * 1e6,
                use.client_s / seconds,
                use.others_s / seconds,
                load1,
            )
        )

    def _check_grpc(self, server: Server) -> None:
        with grpc.insecure_channel(f"{HOST}:{server.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            response = stub.ModelInfer(self.grpc_one, timeout=10)
        proba = next(o for o in response.outputs if o.name == "probabilities")
        values = np.asarray(proba.contents.fp32_contents)
        if not np.allclose(values[:2], self.expected.reshape(-1)[:2], atol=1e-5):
            raise SystemExit(f"{server.label}: wrong gRPC answer: {response}")

    def _warm_up(self, server: Server) -> None:
        if server.port:
            url = f"{server.base}/v2/models/{self.name}/infer"
            wrk(url, self.bodies["v2_1"], 32, WARMUP_S)
        if server.grpc_port:
            grpc_load(f"{HOST}:{server.grpc_port}", self.grpc_one, 8, WARMUP_S / 2)

    @contextmanager
    def serving(self, server: Server) -> Iterator[Server]:
        print(server.label, flush=True)
        server.start()
        try:
            if server.port:
                v2 = f"{server.base}/v2/models/{self.name}/infer"
                self._check(server, v2, self.bodies["v2_1"], "outputs")
            if server.grpc_port:
                self._check_grpc(server)
            self._warm_up(server)
            yield server
        finally:
            server.stop()

    def thin(self) -> None:
        with self.serving(thin_server(self.bundle, self.workdir)) as server:
            for concurrency in (1, 32):
                self._rest(server, "rest v2", "v2_1", concurrency)
            self._rest(server, "rest v2", f"v2_{BIG_ROWS}", 1)
        with self.serving(thin_grpc_server(self.bundle, self.workdir)) as server:
            for concurrency in (1, 32):
                self._grpc(server, concurrency)

    def ferry(self, workers: int, batching: bool, extras: bool) -> None:
        with self.serving(ferry_server(self.bundle, self.workdir, workers, batching)) as server:
            if extras:
                url = f"{server.base}/v1/models/{self.name}:predict"
                self._check(server, url, self.bodies["records_1"], "predictions")
            for concurrency in (1, 32):
                self._rest(server, "rest v2", "v2_1", concurrency)
            for concurrency in (1, 32):
                self._grpc(server, concurrency)
            if extras:
                self._rest(server, "rest v2", f"v2_{BIG_ROWS}", 1)
                self._rest(server, "rest records", "records_1", 32)

    def unmonitored(self) -> None:
        """What monitoring (metrics, drift, prediction log) costs: the same server without it."""
        server = ferry_server(self.bundle, self.workdir, 1, True, monitoring=False)
        with self.serving(server):
            self._rest(server, "rest v2", "v2_1", 32)

    def all(self, parts: set[str]) -> None:
        if "inprocess" in parts:
            self.in_process()
        if "thin" in parts:
            self.thin()
        for workers in (1, 2):
            if f"ferry{workers}" in parts:
                for batching in (True, False):
                    self.ferry(workers, batching, extras=workers == 1 and batching)
            if f"ferry{workers}" in parts and workers == 1:
                self.unmonitored()
        if "profile" in parts:
            self.run.profile = self.profile_ferry()

    # profiling -------------------------------------------------------------------------

    def profile_ferry(self) -> dict[str, Any]:
        server = ferry_server(self.bundle, self.workdir, 1, True)
        out: dict[str, Any] = {}
        with self.serving(server):
            pid = server.process.pid if server.process else 0
            for label, load in (
                ("rest c=32", lambda: self._rest(server, "rest v2", "v2_1", 32)),
                ("grpc c=32", lambda: self._grpc(server, 32)),
            ):
                raw = self.workdir / f"profile_{label[:4]}.txt"
                out[label] = py_spy(pid, raw, max(3, round(self.seconds) - 2), load)
                self.run.points.pop()  # measured under the profiler: not a result
        return out


def py_spy(pid: int, out: Path, seconds: int, load: Callable[[], None]) -> dict[str, Any]:
    """Sample ``pid`` while ``load`` runs; the hottest functions by self and total time."""
    command = [str(BIN / "py-spy"), "record", "-p", str(pid), "-d", str(seconds), "-r", "250"]
    command += ["--threads", "--nonblocking", "-f", "raw", "-o", str(out)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    load()
    spy.wait(timeout=seconds + 30)
    return summarise_stacks(out.read_text() if out.exists() else "")


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def _frame(text: str) -> str:
    match = _FRAME.match(text.strip())
    if not match:
        return text.strip()
    path = match.group("file")
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


_ENTRY = re.compile(r"\(ferry/(cli/|serving/server\.py)")  # on every stack: no information


def summarise_stacks(raw: str, top: int = 25) -> dict[str, Any]:
    """Shares of the samples: per thread, per function's own time (any thread), and Ferry's
    functions including their callees. py-spy runs with ``--threads``: a stack's first frame
    names its thread; threads other than the event loop's are shown in brackets."""
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        first, *rest = stack.split(";")
        thread = "event loop" if "MainThread" in first else first.rpartition(": ")[2]
        tag = "" if thread == "event loop" else f"[{thread}] "
        frames = [_frame(f) for f in rest] or [thread]
        samples += int(count)
        threads[thread] += int(count)
        own[tag + frames[-1]] += int(count)
        for name in {f for f in frames if "(ferry/" in f and not _ENTRY.search(f)}:
            total[tag + name] += int(count)

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100 * n / max(samples, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": samples,
        "threads": share(threads),
        "self": share(own),
        "total": share(total),
    }


# --- targets and report -----------------------------------------------------------------


def set_ratios(points: list[Point]) -> None:
    reference = {(p.protocol, p.concurrency, p.rows): p for p in points if p.server == "thin"}
    for point in points:
        if point.protocol == "in-process":
            continue
        protocol = "rest v2" if point.protocol.startswith("rest") else point.protocol
        ref = reference.get((protocol, point.concurrency, point.rows))
        if ref and ref.rps:
            point.ratio_rps = point.rps / ref.rps
            point.ratio_p99 = point.p99_ms / ref.p99_ms


def _find(points: list[Point], server: str, protocol: str, c: int, rows: int = 1) -> Point | None:
    return next((p for p in points if p.key() == (server, protocol, c, rows)), None)


def _ratio(a: Point | None, b: Point | None, attr: str) -> float | None:
    if a is None or b is None or not getattr(a, attr) or not getattr(b, attr):
        return None
    return float(getattr(a, attr) / getattr(b, attr))


def judge(points: list[Point]) -> list[dict[str, Any]]:
    """The issue's targets on Ferry 1 worker, batching on; ``thin`` is the same ratio for the
    thin endpoint where one exists (what a bare endpoint reaches on this machine)."""
    ferry, thin = "ferry 1w batching on", "thin"
    rest, ref = _find(points, ferry, "rest v2", 32), _find(points, thin, "rest v2", 32)
    grpc_point, thin_grpc = _find(points, ferry, "grpc", 32), _find(points, thin, "grpc", 32)
    one, big = _find(points, ferry, "rest v2", 1), _find(points, ferry, "rest v2", 1, BIG_ROWS)
    thin_one, thin_big = (
        _find(points, thin, "rest v2", 1),
        _find(points, thin, "rest v2", 1, BIG_ROWS),
    )
    rows = f"{BIG_ROWS}-row / 1-row request"
    checks = [
        ("REST req/s at c=32 / thin req/s", _ratio(rest, ref, "rps"), None, 0.8, True),
        ("REST p99 at c=32 / thin p99", _ratio(rest, ref, "p99_ms"), None, 1.5, False),
        (
            "gRPC req/s at c=32 / REST req/s",
            _ratio(grpc_point, rest, "rps"),
            _ratio(thin_grpc, ref, "rps"),
            1.0,
            True,
        ),
        (
            f"{rows}: mean latency at c=1",
            _ratio(big, one, "mean_ms"),
            _ratio(thin_big, thin_one, "mean_ms"),
            2.0,
            False,
        ),
        (
            f"{rows}: server CPU per request at c=1 (secondary)",
            _ratio(big, one, "server_cpu_us"),
            _ratio(thin_big, thin_one, "server_cpu_us"),
            2.0,
            False,
        ),
    ]
    return [
        {
            "target": name,
            "value": value,
            "thin": thin_value,
            "limit": f"{'>=' if at_least else '<='} {limit}",
            "pass": value is not None and (value >= limit if at_least else value <= limit),
        }
        for name, value, thin_value, limit, at_least in checks
        if value is not None
    ]


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "" if value is None else f"{value:,.{digits}f}{suffix}"


def markdown(run: Run) -> str:
    m = run.machine
    lines = [
        "# Serving benchmark",
        "",
        f"Run {run.date} by `benchmarks/serving.py` "
        f"({run.settings['seconds']:g} s per point, bundle `{run.settings['bundle_model']}`, "
        f"Ferry at `{run.settings.get('source', '?')}`).",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['platform']}; "
        f"load average before {_loads(run.load_before)}, after {_loads(run.load_after)}. "
        "Other people's jobs share the machine: `others` is the CPU (in cores) used by every "
        "process but the server and the load generator during each point.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
        "| server | protocol | c | rows | req/s | p50 ms | p99 ms | × thin req/s | × thin p99 "
        "| server CPU µs/req | client cores | others cores | load1 | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in run.points:
        lines.append(
            f"| {p.server} | {p.protocol} | {p.concurrency} | {p.rows} | {p.rps:,.0f} "
            f"| {p.p50_ms:.3f} | {p.p99_ms:.3f} | {_fmt(p.ratio_rps)} | {_fmt(p.ratio_p99)} "
            f"| {_fmt(p.server_cpu_us, 0)} | {_fmt(p.client_cores)} | {_fmt(p.others_cores)} "
            f"| {p.load1:.2f} | {p.errors} |"
        )
    lines += ["", "## Targets (Ferry, 1 worker, batching on, validation on)", ""]
    lines += ["| target | limit | Ferry | thin, same ratio | result |", "|---|--:|--:|--:|---|"]
    for t in run.targets:
        lines.append(
            f"| {t['target']} | {t['limit']} | {_fmt(t['value'])} | {_fmt(t['thin'])} "
            f"| {'pass' if t['pass'] else 'MISS'} |"
        )
    lines += ["", "## Notes", "", *NOTES]
    if run.profile:
        lines += ["", "## Where Ferry's time goes (py-spy, 1 worker, c=32)", ""]
        for label, summary in run.profile.items():
            threads = ", ".join(f"{n} {x:.0f}%" for n, x in summary.get("threads", []))
            threads = f" ({threads})" if threads else ""
            lines += [f"### {label}: {summary['samples']} samples of busy threads{threads}", ""]
            lines += [
                "| function, own time | % | Ferry function with callees | % |",
                "|---|--:|---|--:|",
            ]
            for (a, x), (b, y) in zip(summary["self"], summary["total"], strict=False):
                lines.append(f"| `{a}` | {x:.1f} | `{b}` | {y:.1f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


NOTES = [
    "- Load: `wrk -t1 -cC --latency -s benchmarks/serving_post.lua` for REST (one V2 body, "
    "per-column tensors); an asyncio `grpc.aio` client in the benchmark process for gRPC "
    "(typed contents; 1 channel at c=1, 4 channels at c=32). Both share the 2 cores with the "
    "server: `client cores` is what the load generator used. wrk costs little; the Python gRPC "
    "client costs far more per request, so compare `server CPU µs/req` as well as req/s.",
    "- `thin` REST: FastAPI on uvicorn (1 worker, uvloop, httptools), orjson in and out, numpy "
    "feeds, the same model.onnx with 1 intra-op thread; no validation, no threshold, no "
    "monitoring. `thin` gRPC: the same in a hand-written `grpc.aio` `ModelInfer` (default "
    "asyncio loop). Ratios compare each point with the thin point of the same protocol, "
    "concurrency and rows (the records route with thin REST v2).",
    "- `in-process`: `ferry data plane` is `DataPlane.infer` as the server builds it, without "
    "HTTP, batching or monitoring hooks (orjson parse, V2 decode and signature checks, graph "
    "call, output shaping, orjson encode); `thin request path` is the thin endpoint's.",
    "- `no-monitoring`: the default server with `--no-monitoring` (no metrics, live drift or "
    "prediction log): what monitoring costs at c=32.",
    f"- The {BIG_ROWS}-row target compares mean latency at concurrency 1 (one request at a "
    "time: its full cost); server CPU per request is shown as a second view of the cost.",
    "- wrk 4 corrects its latency histogram for coordinated omission: a request slower than "
    "twice the mean interval adds synthetic samples, so a few server stalls of ~100 ms raise "
    "p90/p99 far above p50 even at c=1 (what clients sending at a steady rate would see).",
    "- p99 at c=32 is the most fragile number here: when other jobs take CPU (`others cores`) "
    "the server is descheduled and tails grow for every server alike.",
    "- With 2 workers the kernel spreads connections over the workers by SO_REUSEPORT hash "
    "(gRPC) or accept races (HTTP): balance between them varies from run to run.",
]


def _loads(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "?"


def source_state() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    root = HERE.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    return commit + (
        " + uncommitted changes in src/" if git("status", "--porcelain", "src") else ""
    )


def machine() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = {
        name: package_version(name)
        for name in (
            "ferry-ml",
            "onnxruntime",
            "uvicorn",
            "starlette",
            "fastapi",
            "grpcio",
            "orjson",
        )
    }
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    versions["wrk"] = (wrk_version.split() or ["?", "?"])[1]
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def wait_for_quiet(max_load: float, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while (load := os.getloadavg()[0]) >= max_load and time.monotonic() < deadline:
        print(f"load average {load:.2f} >= {max_load}: waiting ...", flush=True)
        time.sleep(min(30.0, max(1.0, deadline - time.monotonic())))
    print(f"load average now {os.getloadavg()[0]:.2f}", flush=True)


def write(run: Run, directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    text = markdown(run)
    (directory / "serving.md").write_text(text)
    (directory / "serving.json").write_text(json.dumps(asdict(run), indent=2) + "\n")
    return text


def render(directory: Path) -> str:
    """serving.md again from serving.json (after a change to the notes or the layout)."""
    data = json.loads((directory / "serving.json").read_text())
    data["points"] = [Point(**p) for p in data["points"]]
    run = Run(**data)
    return write(run, directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per point")
    parser.add_argument("--quick", action="store_true", help="5 s per point")
    parser.add_argument("--bundle", type=Path, help="reuse this bundle instead of training")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    parser.add_argument("--profile", action="store_true", help="add a py-spy profile of Ferry")
    parser.add_argument("--max-load", type=float, default=1.5, help="1-min load to wait below")
    parser.add_argument("--wait-load", type=float, default=0.0, help="max seconds to wait for it")
    parser.add_argument(
        "--only",
        help=f"comma-separated parts of {','.join(PARTS)}; results then go to the workdir",
    )
    parser.add_argument(
        "--render", action="store_true", help="rewrite serving.md from serving.json and stop"
    )
    args = parser.parse_args()
    if args.render:
        print(render(RESULTS))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    seconds = 5.0 if args.quick else args.duration
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ferry-serving-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or train_bundle(workdir)
    wait_for_quiet(args.max_load, args.wait_load)
    run = Run(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        settings={
            "seconds": seconds,
            "bundle": str(bundle),
            "big_rows": BIG_ROWS,
            "source": source_state(),
        },
        load_before=list(os.getloadavg()),
    )
    bench = Bench(bundle, workdir, seconds, run)
    run.settings["bundle_model"] = f"{bench.name}, {bench.estimator}"
    parts = set(args.only.split(",")) if args.only else set(PARTS) - {"profile"}
    if args.profile:
        parts.add("profile")
    bench.all(parts)
    run.load_after = list(os.getloadavg())
    set_ratios(run.points)
    run.targets = judge(run.points)
    print()
    directory = workdir if args.only else RESULTS
    print(write(run, directory))
    print(f"written to {directory / 'serving.md'} and serving.json")


if __name__ == "__main__":
    main()
