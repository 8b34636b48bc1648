"""At most one retraining per model at a time, across processes (a lock in the registry DB)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from ferry.registry import Registry, open_registry
from ferry.registry.locks import JobLocks, LockHeld

WORKERS = Path(__file__).with_name("registry_workers.py")


def test_one_holder_at_a_time_and_release(registry: Registry) -> None:
    locks = JobLocks(registry.store)
    assert locks.try_acquire("retrain/fraud", "a", ttl_s=60)
    assert not locks.try_acquire("retrain/fraud", "b", ttl_s=60)
    assert locks.try_acquire("retrain/other", "b", ttl_s=60)  # per name
    holder = locks.holder("retrain/fraud")
    assert holder is not None and holder.owner == "a"
    locks.release("retrain/fraud", "b")  # not b's lock: nothing happens
    assert not locks.try_acquire("retrain/fraud", "b", ttl_s=60)
    locks.release("retrain/fraud", "a")
    assert locks.try_acquire("retrain/fraud", "b", ttl_s=60)


def test_an_expired_lock_of_a_dead_holder_is_taken_over(registry: Registry) -> None:
    locks = JobLocks(registry.store)
    assert locks.try_acquire("retrain/fraud", "dead", ttl_s=0.2)
    time.sleep(0.3)
    assert locks.try_acquire("retrain/fraud", "alive", ttl_s=60)
    assert not locks.extend("retrain/fraud", "dead", ttl_s=60)  # the dead holder lost it


def test_held_names_the_holder_and_releases_on_error(registry: Registry) -> None:
    locks = JobLocks(registry.store)
    with (
        locks.held("retrain/fraud", "first", ttl_s=60),
        pytest.raises(LockHeld, match="locked by first"),
        locks.held("retrain/fraud", "second", ttl_s=60),
    ):
        pass
    with pytest.raises(RuntimeError), locks.held("retrain/fraud", "third", ttl_s=60):
        raise RuntimeError("the job failed")
    assert locks.holder("retrain/fraud") is None


def test_the_heartbeat_keeps_a_long_job_locked(registry: Registry) -> None:
    locks = JobLocks(registry.store)
    with locks.held("retrain/fraud", "long", ttl_s=0.6):
        time.sleep(1.5)  # longer than the ttl: only the heartbeat keeps the lock
        assert not locks.try_acquire("retrain/fraud", "other", ttl_s=60)


def test_only_one_of_several_processes_gets_the_lock(
    registry_url: str, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(WORKERS.parent))  # spawned children import the workers
    import registry_workers

    open_registry(registry_url, str(artifacts_dir)).close()  # migrate once, before the race
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    args = (registry_url, str(artifacts_dir), barrier, results)
    workers = [context.Process(target=registry_workers.hold_lock, args=args) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in workers)
    assert outcomes == ["held", "refused", "refused"]
