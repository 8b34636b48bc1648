"""Job locks in the registry database: one holder per name, across processes and replicas.

A lock is a row keyed by name with an expiry. Taking it is an INSERT, which the primary key makes
atomic on SQLite and PostgreSQL alike; an expired row (its holder died) is deleted first in the
same transaction. The holder extends the expiry from a heartbeat thread while it works.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ferry.errors import ErrorCode, FerryError
from ferry.registry.sql import SqlStore, job_locks


class LockHeld(FerryError):
    code = ErrorCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class Holder:
    owner: str
    acquired_at: float
    expires_at: float


class JobLocks:
    def __init__(self, store: SqlStore) -> None:
        self.engine = store._engine  # the registry's own database and connection pool

    def try_acquire(self, name: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        try:
            with self.engine.begin() as conn:
                expired = (job_locks.c.name == name) & (job_locks.c.expires_at < now)
                conn.execute(sa.delete(job_locks).where(expired))
                conn.execute(
                    job_locks.insert().values(
                        name=name, owner=owner, acquired_at=now, expires_at=now + ttl_s
                    )
                )
        except IntegrityError:
            return False
        return True

    def extend(self, name: str, owner: str, ttl_s: float) -> bool:
        """Push the expiry on; False when the lock is no longer ours (it expired and was taken)."""
        mine = (job_locks.c.name == name) & (job_locks.c.owner == owner)
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(job_locks).where(mine).values(expires_at=time.time() + ttl_s)
            )
        return bool(result.rowcount)

    def release(self, name: str, owner: str) -> None:
        mine = (job_locks.c.name == name) & (job_locks.c.owner == owner)
        with self.engine.begin() as conn:
            conn.execute(sa.delete(job_locks).where(mine))

    def holder(self, name: str) -> Holder | None:
        query = sa.select(job_locks).where(job_locks.c.name == name)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else Holder(row.owner, row.acquired_at, row.expires_at)

    @contextmanager
    def held(self, name: str, owner: str, ttl_s: float = 120.0) -> Iterator[None]:
        """Hold ``name`` for the block, or raise ``LockHeld`` naming who has it."""
        if not self.try_acquire(name, owner, ttl_s):
            holder = self.holder(name)
            who = (
                f"{holder.owner} since {time.ctime(holder.acquired_at)}"
                if holder
                else "another job"
            )
            raise LockHeld(
                f"{name} is locked by {who}: one job at a time; wait for it to finish "
                f"(a lock of a dead process expires {ttl_s:g} s after its last heartbeat)"
            )
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(name, owner, ttl_s, stop), daemon=True
        )
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            self.release(name, owner)

    def _heartbeat(self, name: str, owner: str, ttl_s: float, stop: threading.Event) -> None:
        while not stop.wait(ttl_s / 3):
            try:
                self.extend(name, owner, ttl_s)
            except Exception:  # a database blip: the next beat tries again before expiry
                continue
