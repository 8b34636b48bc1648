"""Dynamic batching under concurrency: batches really form, every row gets its own answer (the
one an unbatched graph call gives), a full queue sheds load with 503 + Retry-After, a slow
graph times requests out with 503, and the disabled path serves the same answers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from ferry.serving.batching import BatchConfig
from ferry.serving.pool import PoolConfig

pytestmark = pytest.mark.anyio

SIZES = [1, 3, 7, 16, 20]  # 20 is over max_batch_size and must still be served
REQUESTS = 200


def _plan() -> list[tuple[int, int]]:
    """(first row, rows) of each request: distinct rows, sizes interleaved."""
    plan, start = [], 0
    for i in range(REQUESTS):
        size = SIZES[i % len(SIZES)]
        plan.append((start, size))
        start += size
    return plan


async def _send(
    served, fraud, start: int, rows: int, records: bool
) -> tuple[list[str], np.ndarray]:
    frame = fraud.rows(start, rows)
    if records:
        response = await served.client.post(
            "/v1/models/fraud:predict", json={"instances": fraud.records(frame)}
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        proba = [[p["probabilities"]["0"], p["probabilities"]["1"]] for p in predictions]
        return [p["label"] for p in predictions], np.asarray(proba)
    response = await served.client.post(
        "/v2/models/fraud/infer", json={"inputs": fraud.tensors(frame)}
    )
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    proba = np.asarray(outputs["probabilities"]["data"]).reshape(rows, 2)
    return outputs["label"]["data"], proba


async def _storm(served, fraud) -> tuple[list[tuple[int, int]], list[Any]]:
    plan = _plan()
    answers = await asyncio.gather(
        *(_send(served, fraud, start, rows, i % 2 == 1) for i, (start, rows) in enumerate(plan))
    )
    return plan, answers


def _assert_rowwise(fraud, plan, answers) -> None:
    total = sum(rows for _, rows in plan)
    expected = fraud.expected(fraud.rows(0, total))
    for (start, rows), (labels, proba) in zip(plan, answers, strict=True):
        assert labels == expected["label"][start : start + rows].tolist(), (start, rows)
        np.testing.assert_allclose(
            proba, expected["probabilities"][start : start + rows], atol=1e-6
        )


async def test_concurrent_requests_are_batched_and_answered_row_by_row(serve, fraud) -> None:
    config = PoolConfig(batch=BatchConfig(max_batch_size=16, max_delay_ms=5))
    async with serve([str(fraud.bundle)], config=config) as served:
        batches: list[tuple[int, float]] = []
        served.pool.get("fraud").batcher.observers.append(lambda n, rows: batches.append((n, rows)))
        plan, answers = await _storm(served, fraud)
        _assert_rowwise(fraud, plan, answers)
        assert sum(n for n, _ in batches) == REQUESTS
        assert sum(rows for _, rows in batches) == sum(rows for _, rows in plan)
        assert max(n for n, _ in batches) > 1, "no batch held more than one request"
        assert len(batches) < REQUESTS
        # a batch only exceeds max_batch_size when it is one oversized request
        assert all(rows <= 16 or n == 1 for n, rows in batches), batches
        assert served.pool.get("fraud").batcher.queued_rows == 0
        assert await served.live()


async def test_batching_disabled_gives_the_same_answers(serve, fraud) -> None:
    config = PoolConfig(batch=BatchConfig(enabled=False))
    async with serve([str(fraud.bundle)], config=config) as served:
        batches: list[tuple[int, float]] = []
        served.pool.get("fraud").batcher.observers.append(lambda n, rows: batches.append((n, rows)))
        plan, answers = await _storm(served, fraud)
        _assert_rowwise(fraud, plan, answers)
        assert len(batches) == REQUESTS and all(n == 1 for n, _ in batches)
        assert served.pool.get("fraud").batcher.queued_rows == 0


def _slow(batcher, seconds: float) -> None:
    """Make the graph call take ``seconds``, off the event loop as a slow model would be."""
    run = batcher.run_graph

    def slow_run(feeds):
        time.sleep(seconds)
        return run(feeds)

    batcher.run_graph, batcher.inline = slow_run, False


async def _infer(served, fraud, rows: int = 3):
    body = {"inputs": fraud.tensors(fraud.rows(0, rows))}
    return await served.client.post("/v2/models/fraud/infer", json=body)


async def test_full_queue_sheds_load_with_503(serve, fraud) -> None:
    config = PoolConfig(batch=BatchConfig(max_batch_size=4, max_queue_rows=8, max_delay_ms=1))
    async with serve([str(fraud.bundle)], config=config) as served:
        _slow(served.pool.get("fraud").batcher, 0.05)
        responses = await asyncio.gather(*(_infer(served, fraud) for _ in range(12)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {200, 503}, statuses
        for response in responses:
            if response.status_code == 503:
                assert response.headers["retry-after"] == "1"
                assert list(response.json()) == ["error"]
                assert "queue is full" in response.json()["error"]
        assert served.pool.get("fraud").batcher.queued_rows == 0
        assert (await _infer(served, fraud)).status_code == 200, "served again once drained"


async def test_request_larger_than_the_queue_is_a_client_error(serve, fraud) -> None:
    config = PoolConfig(batch=BatchConfig(max_batch_size=4, max_queue_rows=8))
    async with serve([str(fraud.bundle)], config=config) as served:
        response = await _infer(served, fraud, rows=9)
        # retrying can never help, so this is not a 503
        assert response.status_code == 400
        assert "9 rows" in response.json()["error"] and "split" in response.json()["error"]
        assert (await _infer(served, fraud, rows=8)).status_code == 200


async def test_slow_inference_times_out_with_503(serve, fraud) -> None:
    config = PoolConfig(batch=BatchConfig(max_delay_ms=0, timeout_s=0.05))
    async with serve([str(fraud.bundle)], config=config) as served:
        batcher = served.pool.get("fraud").batcher
        run = batcher.run_graph
        _slow(batcher, 0.3)
        response = await _infer(served, fraud)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "within 0.05 s" in response.json()["error"]
        batcher.run_graph = run
        await asyncio.sleep(0.35)  # the slow call finishes; its answer is dropped
        response = await _infer(served, fraud)
        assert response.status_code == 200, response.text
        assert batcher.queued_rows == 0
