"""The batcher on a fake graph: rows go back to the request they came from, batches respect
their size, graph errors reach every request of the batch and the worker survives them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from ferry.errors import FerryError, SignatureError
from ferry.serving.batching import BatchConfig, Batcher, Overloaded, TimedOut

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def double(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": feeds["x"] * 2}


def rows(start: int, count: int) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + count, dtype=np.float32).reshape(-1, 1)}


@pytest.fixture
async def make() -> AsyncIterator:
    made: list[Batcher] = []

    async def factory(config: BatchConfig, run=double) -> Batcher:
        batcher = Batcher(run, config)
        batcher.batches = []
        batcher.observers.append(lambda n, r: batcher.batches.append((n, int(r))))
        await batcher.start()
        made.append(batcher)
        return batcher

    yield factory
    for batcher in made:
        await batcher.close()


async def test_each_request_gets_its_own_rows(make) -> None:
    batcher = await make(BatchConfig(max_batch_size=8, max_delay_ms=2))
    sizes = [1, 5, 3, 8, 12, 2] * 10
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    answers = await asyncio.gather(
        *(batcher.submit(rows(s, n), n) for s, n in zip(starts, sizes, strict=True))
    )
    for start, size, answer in zip(starts, sizes, answers, strict=True):
        np.testing.assert_array_equal(answer["y"], rows(start, size)["x"] * 2)
    assert sum(n for n, _ in batcher.batches) == len(sizes)
    assert max(n for n, _ in batcher.batches) > 1
    assert all(r <= 8 or n == 1 for n, r in batcher.batches)
    assert batcher.queued_rows == 0


async def test_a_request_that_does_not_fit_waits_for_the_next_batch(make) -> None:
    batcher = await make(BatchConfig(max_batch_size=8, max_delay_ms=20))
    _, _, third = await asyncio.gather(
        batcher.submit(rows(0, 5), 5), batcher.submit(rows(5, 5), 5), batcher.submit(rows(10, 3), 3)
    )
    assert batcher.batches == [(1, 5), (2, 8)]  # 5 | 5+3
    np.testing.assert_array_equal(third["y"].ravel(), [20, 22, 24])


async def test_graph_errors_reach_every_request_and_the_worker_survives(make) -> None:
    fail = threading.Event()
    fail.set()

    def flaky(feeds):
        if fail.is_set():
            raise FerryError("graph broke")
        return double(feeds)

    batcher = await make(BatchConfig(max_batch_size=8, max_delay_ms=5), flaky)
    results = await asyncio.gather(
        *(batcher.submit(rows(i, 1), 1) for i in range(4)), return_exceptions=True
    )
    assert all(isinstance(r, FerryError) and "graph broke" in str(r) for r in results)
    fail.clear()
    answer = await batcher.submit(rows(7, 1), 1)
    assert answer["y"].ravel().tolist() == [14.0]


async def test_full_queue_and_oversized_requests(make) -> None:
    gate = threading.Event()

    def blocked(feeds):
        gate.wait(2)
        return double(feeds)

    batcher = await make(BatchConfig(max_batch_size=4, max_queue_rows=6, max_delay_ms=50), blocked)
    with pytest.raises(SignatureError, match="7 rows, more than this model's queue holds"):
        await batcher.submit(rows(0, 7), 7)
    waiting = [asyncio.create_task(batcher.submit(rows(0, 3), 3)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="queue is full") as raised:
        await batcher.submit(rows(0, 1), 1)
    assert raised.value.retry_after_s == 1
    gate.set()
    await asyncio.gather(*waiting)
    assert batcher.queued_rows == 0
    assert (await batcher.submit(rows(0, 1), 1))["y"].shape == (1, 1)


async def test_timeout_drops_the_request_not_the_queue(make) -> None:
    gate = threading.Event()

    def slow(feeds):
        gate.wait(2)
        return double(feeds)

    batcher = await make(BatchConfig(max_batch_size=4, timeout_s=0.05), slow)
    first = asyncio.create_task(batcher.submit(rows(0, 1), 1))
    await asyncio.sleep(0.01)  # the first request now occupies the graph
    with pytest.raises(TimedOut, match=r"within 0\.05 s"):
        await batcher.submit(rows(1, 1), 1)  # ... so this one waits in the queue, too long
    gate.set()
    await asyncio.gather(first, return_exceptions=True)
    answer = await batcher.submit(rows(2, 1), 1)
    assert answer["y"].ravel().tolist() == [4.0]
    assert batcher.queued_rows == 0


async def test_disabled_batching_calls_the_graph_per_request(make) -> None:
    batcher = await make(BatchConfig(enabled=False))
    assert batcher.worker is None
    answers = await asyncio.gather(*(batcher.submit(rows(i, 2), 2) for i in range(5)))
    assert [a["y"][0, 0] for a in answers] == [0, 2, 4, 6, 8]
    assert batcher.batches == [(1, 2)] * 5
    assert batcher.queued_rows == 0


async def test_calibration_picks_inline_for_fast_graphs(make) -> None:
    batcher = await make(BatchConfig())
    batcher.calibrate(rows(0, 1))
    assert batcher.inline is True
    assert (await batcher.submit(rows(3, 1), 1))["y"].ravel().tolist() == [6.0]
