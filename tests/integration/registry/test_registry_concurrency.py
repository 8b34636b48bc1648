"""Several processes at once: distinct consecutive numbers, and no half version after a crash."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ferry.errors import NotFoundError
from ferry.registry import open_registry

WORKERS = Path(__file__).with_name("registry_workers.py")
PER_PROCESS = 10


def test_two_processes_registering_get_distinct_consecutive_numbers(
    registry_url: str,
    artifacts_dir: Path,
    make_bundle: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(WORKERS.parent))  # spawned children import the workers
    import registry_workers

    bundle = make_bundle()
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    args = (registry_url, str(artifacts_dir), str(bundle), PER_PROCESS, barrier, results)
    processes = [context.Process(target=registry_workers.register_many, args=args) for _ in "ab"]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    numbers = [results.get(timeout=1) for p in processes if p.exitcode == 0]

    assert [p.exitcode for p in processes] == [0, 0]
    assert all(run == sorted(run) for run in numbers)  # each process sees its numbers rise
    assert sorted(numbers[0] + numbers[1]) == list(range(1, 2 * PER_PROCESS + 1))
    with open_registry(registry_url, str(artifacts_dir)) as registry:
        versions = registry.list_versions("fraud")
        registered = [e for e in registry.events("fraud") if e.kind == "registered"]
    assert len({v.artifact_key for v in versions}) == 2 * PER_PROCESS
    assert sorted(e.version or 0 for e in registered) == list(range(1, 2 * PER_PROCESS + 1))
    assert len({e.actor for e in registered}) == 2


def test_a_process_killed_mid_registration_leaves_no_version(
    registry_url: str, artifacts_dir: Path, make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle()
    command = [sys.executable, str(WORKERS), registry_url, str(artifacts_dir), str(bundle)]
    killed = subprocess.run(command, capture_output=True, timeout=120, check=False)

    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert len(list((artifacts_dir / "bundles" / "fraud").iterdir())) == 1  # it did upload
    with open_registry(registry_url, str(artifacts_dir)) as registry:
        with pytest.raises(NotFoundError, match="'fraud' is not in the registry"):
            registry.resolve("fraud")
        assert registry.events() == []
        assert registry.register("fraud", bundle, actor="alice").version == 1
