"""Dynamic batching per model version, with a bounded queue that sheds load instead of queueing.

The worker takes whatever is waiting (up to ``max_batch_size`` rows), optionally waits up to
``max_delay_ms`` for more, runs one graph call and hands each request its own rows back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ferry.errors import ErrorCode, FerryError, SignatureError
from ferry.serving.inputs import Feeds, concat

Outputs = dict[str, np.ndarray]
RunFn = Callable[[Feeds], Outputs]

# A graph call faster than this runs on the event loop: a thread hop would cost more than it.
INLINE_BELOW_S = 0.0005


def _expire(future: asyncio.Future[Outputs], timeout_s: float) -> None:
    if not future.done():
        future.set_exception(
            TimedOut(f"inference did not finish within {timeout_s} s; retry or lower the load")
        )


class Overloaded(FerryError):
    code = ErrorCode.UNAVAILABLE
    retry_after_s = 1


class TimedOut(FerryError):
    code = ErrorCode.UNAVAILABLE
    retry_after_s = 1


@dataclass(frozen=True)
class BatchConfig:
    enabled: bool = True
    max_batch_size: int = 64
    max_delay_ms: float = 0.0
    max_queue_rows: int = 8192
    timeout_s: float = 10.0


@dataclass
class _Pending:
    feeds: Feeds
    rows: int
    future: asyncio.Future[Outputs]
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, run: RunFn, config: BatchConfig) -> None:
        self.run_graph, self.config = run, config
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.queued_rows = 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-model")
        self.inline = False
        self.worker: asyncio.Task[None] | None = None
        self.observers: list[Callable[[int, float], None]] = []
        self._carry: _Pending | None = None  # a request that did not fit the last batch
        self._forming: list[_Pending] = []
        self.wait_observers: list[Callable[[float], None]] = []  # seconds each request queued

    def calibrate(self, feeds: Feeds) -> None:
        """Decide between inline and threaded graph calls from a measured call."""
        started = time.perf_counter()
        self.run_graph(feeds)
        self.inline = time.perf_counter() - started < INLINE_BELOW_S

    async def start(self) -> None:
        if self.config.enabled and self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
            self.worker = None
        self.executor.shutdown(wait=False)

    def fail_all(self, error: Exception) -> int:
        """Fail queued requests so their callers answer now (503) instead of being cut off."""
        failed = 0
        pending = [*self._forming, *([self._carry] if self._carry else [])]
        self._carry = None
        while not self.queue.empty():
            pending.append(self.queue.get_nowait())
        for item in pending:
            if not item.future.done():
                item.future.set_exception(error)
                failed += 1
        self.queued_rows = 0
        return failed

    async def submit(self, feeds: Feeds, rows: int) -> Outputs:
        if rows > self.config.max_queue_rows:  # can never fit: "retry shortly" would be a lie
            raise SignatureError(
                f"request has {rows} rows, more than this model's queue holds "
                f"({self.config.max_queue_rows}); split it into smaller requests"
            )
        if self.queued_rows + rows > self.config.max_queue_rows:
            raise Overloaded(
                f"model queue is full ({self.queued_rows} rows waiting, limit "
                f"{self.config.max_queue_rows}); retry shortly"
            )
        if not self.config.enabled:
            return await self._direct(feeds, rows)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        self.queued_rows += rows
        self.queue.put_nowait(_Pending(feeds, rows, future))
        # A timer, not wait_for: no extra task per request on the hot path.
        timer = loop.call_later(self.config.timeout_s, _expire, future, self.config.timeout_s)
        try:
            return await future
        finally:
            timer.cancel()

    async def _direct(self, feeds: Feeds, rows: int) -> Outputs:
        self.queued_rows += rows
        try:
            outputs = await self._call(feeds)
        finally:
            self.queued_rows -= rows
        self._observe(1, rows)
        return outputs

    async def _call(self, feeds: Feeds) -> Outputs:
        if self.inline:
            return self.run_graph(feeds)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.run_graph, feeds)

    async def _collect(self) -> list[_Pending]:
        first, self._carry = self._carry, None
        batch = [first or await self.queue.get()]
        self._forming = batch  # visible to fail_all while the batch waits for more rows
        rows = batch[0].rows
        deadline = time.perf_counter() + self.config.max_delay_ms / 1000
        while rows < self.config.max_batch_size:
            if self.queue.empty():
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
            else:
                item = self.queue.get_nowait()
            if rows + item.rows > self.config.max_batch_size:
                self._carry = item
                break
            batch.append(item)
            rows += item.rows
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            self.queued_rows -= sum(p.rows for p in batch)
            live = [p for p in batch if not p.future.done()]
            if live:
                await self._run_batch(live)
            self._forming = []

    async def _run_batch(self, batch: list[_Pending]) -> None:
        if self.wait_observers:
            now = time.perf_counter()
            for pending in batch:
                for observe in self.wait_observers:
                    observe(now - pending.queued_at)
        try:
            outputs = await self._call(concat([p.feeds for p in batch]))
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self._observe(len(batch), sum(p.rows for p in batch))
        offset = 0
        for pending in batch:
            part = {k: v[offset : offset + pending.rows] for k, v in outputs.items()}
            offset += pending.rows
            if not pending.future.done():
                pending.future.set_result(part)

    def _observe(self, requests: int, rows: int) -> None:
        for observer in self.observers:
            observer(requests, float(rows))
