"""Soak-lite: one ``ferry serve`` worker under 30 s of concurrent REST load, records and V2
tensors mixed, with monitoring on (metrics, drift, prediction log) as a user runs it.

Every request must succeed and the server's resident memory must level off: growth between
the 10 s and 30 s marks of more than 30% means something keeps what it should let go.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import serve_support as ss

THREADS = 8
SOAK_S = 30.0
WARM_S = 10.0
MAX_GROWTH = 0.30

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ss.Server, list[str]]]:
    home = tmp_path_factory.mktemp("soak-home")
    inputs = ss.prepare_home(home, versions=1)[1]
    with ss.serving(home, tmp_path_factory.mktemp("soak")) as server:
        yield server, inputs


def _v2_body(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    datatypes = {"timestamp": "FP64"}
    tensors = []
    for name in names:
        data = [row[name] for row in rows]
        datatype = "BYTES" if isinstance(data[0], str) else datatypes.get(name, "FP32")
        tensors.append({"name": name, "datatype": datatype, "shape": [len(data), 1], "data": data})
    return {"inputs": tensors}


class Load:
    """``THREADS`` clients, each on its own keep-alive connection, until told to stop or
    ``SOAK_S`` plus a margin has passed; every outcome is counted."""

    def __init__(self, server: ss.Server, names: list[str]) -> None:
        self.server, self.names = server, names
        self.rows = ss.only(ss.sample_rows(64, seed=21), names)
        self.stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(THREADS)]

    def _request(self, client: httpx.Client, index: int, count: int) -> httpx.Response:
        # One row a request: the monitor remembers the last 200,000 rows for the feedback
        # join (~60 MiB, by design); filling it slower keeps that cache out of the 10-30 s
        # growth, which is there to catch what is NOT bounded.
        rows = [self.rows[(count * THREADS + index) % len(self.rows)]]
        if index % 2:
            body = _v2_body(rows, self.names)
            return client.post(f"{self.server.url}/v2/models/fraud/infer", json=body)
        return ss.predict(client, self.server.url, rows)

    def _run(self, index: int) -> None:
        deadline = time.perf_counter() + SOAK_S + 30  # bounded even if the test loses track
        count = 0
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set() and time.perf_counter() < deadline:
                try:
                    outcome = str(self._request(client, index, count).status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                count += 1
                with self.lock:
                    self.outcomes[outcome] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def test_memory_levels_off_and_nothing_fails_under_sustained_load(
    served: tuple[ss.Server, list[str]],
) -> None:
    server, names = served
    started = time.perf_counter()
    with Load(server, names) as load:
        # Waiting for time to pass is what a soak is; the clients run meanwhile.
        assert not load.stop.wait(WARM_S)
        warm = ss.rss_kib(server.pid)
        assert not load.stop.wait(SOAK_S - WARM_S)
        final = ss.rss_kib(server.pid)
    elapsed = time.perf_counter() - started

    total = sum(load.outcomes.values())
    growth = (final - warm) / warm
    print(
        f"soak: {total} requests in {elapsed:.0f} s ({total / elapsed:.0f}/s), "
        f"outcomes {dict(load.outcomes)}; RSS {warm / 1024:.0f} MiB at {WARM_S:.0f} s -> "
        f"{final / 1024:.0f} MiB at {SOAK_S:.0f} s ({growth:+.1%})"
    )
    assert dict(load.outcomes) == {"200": total}
    assert total > THREADS * 10  # the load really ran
    assert growth < MAX_GROWTH
    assert server.proc.poll() is None
