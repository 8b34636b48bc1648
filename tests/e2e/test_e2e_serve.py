"""``ferry serve`` as a real process: start-up, Triton's own clients over REST and gRPC, the
SIGTERM drain and its grace bound, several workers on one port, hot swap when an alias moves,
and tidy start-up errors.

One registry (``fraud`` versions 1 and 2, ``production`` -> 1) is trained once for the module
through the lab API; every server is a ``ferry serve`` subprocess with that ``FERRY_HOME``,
on free ports, waited for on ``/v2/health/ready``.
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

sys.path.insert(0, str(Path(__file__).parent))
import serve_support as ss

POLL_S = 0.3
# The same row can come back a few float32 ulps apart when the batcher joins it with other
# requests (ONNX Runtime picks other kernels for other batch sizes): equal means this close.
CLOSE = {"rtol": 1e-5, "atol": 1e-6}
NUMPY_TYPES = {"FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}


@dataclass
class Home:
    path: Path
    inputs: dict[int, list[str]]  # input names of each version

    @property
    def common(self) -> list[str]:
        """Fields every version takes: records with these are valid for 1 and 2."""
        return [n for n in self.inputs[1] if n in self.inputs[2]]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    path = tmp_path_factory.mktemp("serve-home")
    return Home(path, ss.prepare_home(path))


@pytest.fixture(scope="module")
def shared(home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ss.Server]:
    """One server for the client and hot-swap tests; the swap test leaves ``production`` at 1.
    It is asked for predictions from the moment it starts (see the start-up test)."""
    tmp = tmp_path_factory.mktemp("shared")
    server = ss.start_server(home.path, tmp, "--poll-interval", str(POLL_S))
    try:
        row = ss.only(ss.sample_rows(1), home.inputs[1])
        server.startup_statuses = server.statuses_until_answered(row)
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_a_starting_server_answers_predictions_503_until_ready(shared: ss.Server) -> None:
    *early, first_answer = shared.startup_statuses
    assert first_answer == 200
    # uvicorn listens before the models load (so /v2/health/live works); a model that is
    # still loading is not ready (503, retry), never unknown (404).
    assert set(early) <= {503}, early


def _columns(
    metadata: dict[str, Any], rows: list[dict[str, Any]]
) -> list[tuple[str, str, np.ndarray]]:
    """One ``[rows, 1]`` array per model input, typed as the model's metadata says."""
    columns = []
    for spec in metadata["inputs"]:
        values = [row[spec["name"]] for row in rows]
        array = np.asarray(values, dtype=NUMPY_TYPES[spec["datatype"]]).reshape(-1, 1)
        columns.append((spec["name"], spec["datatype"], array))
    return columns


def test_tritonclient_http_and_grpc_agree_with_the_records_route(
    home: Home, shared: ss.Server
) -> None:
    rows = ss.only(ss.sample_rows(5), home.inputs[1])
    with httpx.Client(timeout=30) as client:
        reference = ss.predict(client, shared.url, rows)
    assert reference.status_code == 200, reference.text
    version = reference.json()["model_version"]
    expected = ss.probabilities(reference.json())
    labels = [p["label"] for p in reference.json()["predictions"]]

    with triton_http.InferenceServerClient(f"127.0.0.1:{shared.port}") as rest:
        assert rest.is_server_live() and rest.is_server_ready()
        assert rest.get_server_metadata()["name"] == "ferry"
        metadata = rest.get_model_metadata("fraud")
        assert metadata["name"] == "fraud" and metadata["versions"] == [version]
        assert [i["name"] for i in metadata["inputs"]] == home.inputs[1]
        assert {i["datatype"] for i in metadata["inputs"]} == {"FP32", "FP64", "BYTES"}
        assert rest.is_model_ready("fraud")
        inputs = []
        for name, datatype, array in _columns(metadata, rows):
            tensor = triton_http.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=False)
            inputs.append(tensor)
        wanted = [
            triton_http.InferRequestedOutput(n, binary_data=False)
            for n in ("probabilities", "label")
        ]
        answer = rest.infer("fraud", inputs, outputs=wanted)
    np.testing.assert_allclose(answer.as_numpy("probabilities"), expected, **CLOSE)
    assert [str(v) for v in answer.as_numpy("label").reshape(-1)] == labels

    with triton_grpc.InferenceServerClient(f"127.0.0.1:{shared.grpc_port}") as remote:
        assert remote.is_server_live() and remote.is_server_ready()
        assert remote.get_server_metadata(as_json=True)["name"] == "ferry"
        grpc_metadata = remote.get_model_metadata("fraud", as_json=True)
        assert grpc_metadata["versions"] == [version]
        assert [i["name"] for i in grpc_metadata["inputs"]] == home.inputs[1]
        assert remote.is_model_ready("fraud")
        grpc_inputs = []
        for name, datatype, array in _columns(metadata, rows):
            tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            grpc_inputs.append(tensor)
        grpc_answer = remote.infer(
            "fraud", grpc_inputs, outputs=[triton_grpc.InferRequestedOutput("probabilities")]
        )
    np.testing.assert_allclose(grpc_answer.as_numpy("probabilities"), expected, **CLOSE)


def _readiness_after_signal(server: ss.Server, timeout: float = 5.0) -> int:
    """The first readiness status other than 200 after SIGTERM (the handler runs on the
    server's loop, so a probe may still see 200 for a moment)."""
    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            status = client.get(f"{server.url}/v2/health/ready").status_code
            if status != 200 or time.perf_counter() > deadline:
                return status


def test_sigterm_turns_readiness_503_and_finishes_every_accepted_request(
    home: Home, tmp_path: Path
) -> None:
    delay_s = 1.5
    flags = ["--max-delay-ms", str(delay_s * 1000), "--max-batch-size", "1000000"]
    rows = ss.only(ss.sample_rows(20, seed=5), home.inputs[1])
    with ss.serving(home.path, tmp_path, *flags, "--drain-delay", "1", "--grace", "20") as server:
        with httpx.Client(timeout=30) as client:
            reference = ss.predict(client, server.url, rows)  # all 20 rows: the right answers
        assert reference.status_code == 200, reference.text
        expected = ss.probabilities(reference.json())

        first_sent = time.perf_counter()
        connections = ss.send_unread(server.port, rows)  # the answers are read after the signal
        signalled = server.terminate()
        # The batcher holds the first request for delay_s: at the signal none has been answered.
        assert signalled - first_sent < delay_s
        clock = ss.ExitClock(server.proc)
        assert _readiness_after_signal(server) == 503

        answers = []
        for connection in connections:
            response = connection.getresponse()
            answers.append((response.status, json.loads(response.read())))
            connection.close()
        stopped_s = clock.seconds_after(signalled)

    assert [status for status, _ in answers] == [200] * len(rows), answers
    got = np.vstack([ss.probabilities(body) for _, body in answers])
    np.testing.assert_allclose(got, expected, **CLOSE)
    assert server.proc.returncode == 0, server.output()
    print(f"drain: exited {stopped_s:.2f} s after SIGTERM (drain delay 1 s, grace 20 s)")
    assert stopped_s < 20
    assert "Traceback" not in server.output()


def _outcome(connection: http.client.HTTPConnection) -> str:
    try:
        return str(connection.getresponse().status)
    except (http.client.HTTPException, OSError) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def test_grace_bounds_the_stop_when_requests_outlast_it(home: Home, tmp_path: Path) -> None:
    rows = ss.only(ss.sample_rows(3, seed=6), home.inputs[1])
    batch_wait_s, grace_s = 15, 2
    flags = ["--max-delay-ms", str(batch_wait_s * 1000), "--max-batch-size", "1000000"]
    flags += ["--timeout", "60", "--drain-delay", "0.5", "--grace", str(grace_s)]
    with ss.serving(home.path, tmp_path, *flags) as server:
        connections = ss.send_unread(server.port, rows)  # held by the batcher for 15 s
        signalled = server.terminate()
        stopped_s = ss.ExitClock(server.proc).seconds_after(signalled)
        outcomes = [_outcome(connection) for connection in connections]

    print(f"grace: exited {stopped_s:.2f} s after SIGTERM (grace {grace_s} s); cut: {outcomes}")
    assert server.proc.returncode == 0, server.output()
    # The grace period counts from the signal (drain delay included); what is left after it
    # is interpreter shutdown, far from the 15 s the requests would have needed.
    assert stopped_s < grace_s + 3
    # Requests still queued when the grace period ends get 503 (retry elsewhere), not a cut
    # connection or a 500.
    assert outcomes == ["503"] * len(rows), outcomes
    assert "Traceback" not in server.output()


def test_two_workers_answer_on_one_port_and_stop_together(home: Home, tmp_path: Path) -> None:
    rows = ss.only(ss.sample_rows(8, seed=9), home.inputs[1])
    server = ss.start_server(home.path, tmp_path, "--workers", "2", "--poll-interval", "60")
    try:
        # Asked from the first moment: a request waits for a worker that can answer it, it
        # never meets one still loading (which would say 404, "not served here").
        assert server.statuses_until_answered(rows) == [200]
        server.wait_ready()
        workers = ss.worker_pids(server.pid)
        assert len(workers) == 2 and all(ss.alive(pid) for pid in workers), workers
        with httpx.Client(timeout=30) as client:
            expected = ss.probabilities(ss.predict(client, server.url, rows).json())

        def fresh_connection(index: int) -> tuple[int, Any]:
            # A new connection per request: the kernel hands each to whichever worker accepts.
            response = httpx.post(
                f"{server.url}/v1/models/fraud:predict",
                json={"instances": [rows[index % len(rows)]]},
                timeout=30,
            )
            return response.status_code, response.json()

        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(fresh_connection, range(60)))
        assert [status for status, _ in answers] == [200] * 60, answers
        for index, (_, body) in enumerate(answers):
            np.testing.assert_allclose(
                ss.probabilities(body)[0], expected[index % len(rows)], **CLOSE
            )
        for _ in range(6):  # each client is a new connection to the shared gRPC port
            with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as remote:
                assert remote.is_server_ready() and remote.is_model_ready("fraud")

        signalled = server.terminate()
        assert server.proc.wait(timeout=30) == 0, server.output()
        print(f"workers: parent exited {time.perf_counter() - signalled:.2f} s after SIGTERM")
        assert not any(ss.alive(pid) for pid in workers)
    finally:
        server.stop()
    assert "Traceback" not in server.output()


@dataclass
class Seen:
    at: float  # epoch seconds, to compare with the registry's event times
    thread: int
    status: int
    version: str | None
    proba: np.ndarray


class SwapWatch:
    """Client threads that predict one row continuously and record every answer."""

    def __init__(
        self, server: ss.Server, row: dict[str, Any], threads: int, bound_s: float
    ) -> None:
        self.server, self.row, self.bound_s = server, row, bound_s
        self.seen: list[Seen] = []
        self.changed = threading.Condition()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, index: int) -> None:
        deadline = time.time() + self.bound_s
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and time.time() < deadline:
                response = ss.predict(client, self.server.url, [self.row])
                ok = response.status_code == 200
                body = response.json() if ok else {}
                proba = ss.probabilities(body)[0] if ok else np.zeros(2)
                seen = Seen(
                    time.time(), index, response.status_code, body.get("model_version"), proba
                )
                with self.changed:
                    self.seen.append(seen)
                    self.changed.notify_all()

    def __enter__(self) -> SwapWatch:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def first(self, version: str, after: float, timeout: float) -> float:
        """When the first answer from ``version`` after ``after`` arrived (epoch seconds)."""

        def found() -> float | None:
            return next((s.at for s in self.seen if s.version == version and s.at > after), None)

        with self.changed:
            assert self.changed.wait_for(lambda: found() is not None, timeout), (
                f"no answer from version {version} within {timeout} s"
            )
            return found()  # type: ignore[return-value]


def _move_alias(home: Home, version: int) -> tuple[float, float]:
    """``ferry registry alias`` as a user runs it: when the registry recorded the move and
    when the command returned (epoch seconds)."""
    done = ss.run_ferry(home.path, "registry", "alias", "fraud", "production", str(version))
    returned = time.time()
    assert done.returncode == 0, done.stderr
    return ss.alias_moved_at(home.path, version), returned


def test_alias_moves_swap_the_served_version_under_load_without_errors(
    home: Home, shared: ss.Server
) -> None:
    row = ss.only(ss.sample_rows(1, seed=3), home.common)[0]
    with SwapWatch(shared, row, threads=2, bound_s=90) as watch:
        watch.first("1", after=time.time(), timeout=30)
        moved_2, returned_2 = _move_alias(home, 2)
        at_2 = watch.first("2", after=moved_2, timeout=30)
        moved_1, returned_1 = _move_alias(home, 1)
        at_1 = watch.first("1", after=moved_1, timeout=30)
        watch.first("1", after=max(at_1, returned_1), timeout=30)  # and it keeps serving
    seen = watch.seen

    print(
        f"swap 1->2: first v2 answer {at_2 - moved_2:.2f} s after the registry recorded the move "
        f"({at_2 - returned_2:+.2f} s from the CLI's exit); swap 2->1: {at_1 - moved_1:.2f} s "
        f"({at_1 - returned_1:+.2f} s); {len(seen)} requests, poll interval {POLL_S} s"
    )
    assert [s for s in seen if s.status != 200] == []
    assert {s.version for s in seen} == {"1", "2"}
    answers = {v: np.vstack([s.proba for s in seen if s.version == v]) for v in ("1", "2")}
    for rows in answers.values():
        np.testing.assert_allclose(rows, np.broadcast_to(rows[0], rows.shape), **CLOSE)
    assert np.abs(answers["1"][0] - answers["2"][0]).max() > 1e-3  # really another model
    # Each thread saw 1, then 2, then 1 again: a swap is atomic, never a mix of versions.
    for thread in range(2):
        versions = [s.version for s in seen if s.thread == thread]
        changes = [b for a, b in itertools.pairwise(versions) if a != b]
        assert changes == ["2", "1"], changes
    # The watcher resolves every POLL_S, then fetches, verifies, loads and warms the new
    # version in a thread: allow two intervals plus the load, on a busy machine.
    assert at_2 - moved_2 < 2 * POLL_S + 1.5
    assert at_1 - moved_1 < 2 * POLL_S + 1.5


def test_bad_starts_fail_fast_with_one_line(home: Home) -> None:
    def serve(args: tuple[str, ...], port: int) -> tuple[Any, float]:
        started = time.perf_counter()
        ports = ["--port", str(port), "--grpc-port", str(ss.free_port())]
        done = ss.run_ferry(home.path, "serve", *args, *ports, timeout=60)
        return done, time.perf_counter() - started

    with socket.socket() as busy:  # a port some other program listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        cases = [  # what is served, the port, and what the one error line must say
            (("nope@production",), ss.free_port(), "'nope'"),
            (("fraud@production", "--model-batch", "fraud=12:abc"), 0, "NAME=MAX_BATCH_SIZE"),
            (
                ("fraud@production", "--model-batch", "fraud"),
                0,
                "NAME=MAX_BATCH_SIZE[:MAX_DELAY_MS]",
            ),
            (("fraud@production",), taken, f"cannot bind HTTP to 127.0.0.1:{taken}"),
        ]
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = list(pool.map(lambda case: serve(case[0], case[1]), cases))

    for (args, _, wanted), (done, seconds) in zip(cases, runs, strict=True):
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        print(f"serve {' '.join(args)}: exit {done.returncode} after {seconds:.1f} s: {lines}")
        assert done.returncode != 0, done
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert wanted in lines[0], lines[0]
        assert seconds < 30
