"""Code that runs in child processes of the registry tests (spawned, or run as a script).

As a script: register one bundle but die by SIGKILL after the version row is inserted and
before the transaction commits, as a machine losing power would.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ferry.registry import open_registry
from ferry.registry.sql import SqlStore


def register_many(
    url: str, artifacts: str, bundle: str, count: int, barrier: Any, results: Any
) -> None:
    """Open the registry (fresh database: migrations race too) and register ``count`` times."""
    barrier.wait(timeout=60)
    with open_registry(url, artifacts) as registry:
        actor = f"worker-{os.getpid()}"
        numbers = [
            registry.register("fraud", Path(bundle), actor=actor).version for _ in range(count)
        ]
    results.put(numbers)


def hold_lock(url: str, artifacts: str, barrier: Any, results: Any) -> None:
    """Try to take the retraining lock at the same moment as the other processes."""
    from ferry.registry.locks import JobLocks, LockHeld

    registry = open_registry(url, artifacts)
    barrier.wait(timeout=60)
    try:
        with JobLocks(registry.store).held("retrain/fraud", f"worker-{os.getpid()}", 60):
            results.put("held")
            time.sleep(1.0)  # still holding while the others try
    except LockHeld:
        results.put("refused")
    registry.close()


def _die(*args: object, **kwargs: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def register_then_die(url: str, artifacts: str, bundle: str) -> None:
    with open_registry(url, artifacts) as registry:
        # add_version inserts the version row, then the event: dying there is mid-transaction.
        SqlStore._insert_event = _die  # type: ignore[method-assign]
        registry.register("fraud", Path(bundle), actor="doomed")


if __name__ == "__main__":
    register_then_die(*sys.argv[1:4])
