"""The model pool against a real registry: hot swap when an alias moves (also under load and
when it moves back while the old version drains), unloading retired versions, failed loads
that keep the old version serving, and versioned routes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferry.core.bundle import MODEL, write_bundle
from ferry.serving.batching import BatchConfig
from ferry.serving.pool import PoolConfig

pytestmark = pytest.mark.anyio

INFER = "/v2/models/fraud/infer"


@pytest.fixture
def two_versions(registry, fraud, fraud_v2):
    """Registry with fraud 1 (``fraud``) and 2 (``fraud_v2``), production -> 1."""
    assert registry.register("fraud", fraud.bundle, actor="t").version == 1
    assert registry.register("fraud", fraud_v2.bundle, actor="t").version == 2
    registry.set_alias("fraud", "production", 1, actor="t")
    return registry


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        assert time.perf_counter() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def move(registry, version: int) -> None:
    await asyncio.to_thread(registry.set_alias, "fraud", "production", version, actor="t")


async def infer(served, case, path: str = INFER) -> Any:
    return await served.client.post(path, json={"inputs": case.tensors(case.rows(0, 8))})


def probabilities(response) -> np.ndarray:
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    return np.asarray(outputs["probabilities"]["data"]).reshape(-1, 2)


def loaded_versions(served) -> list[int]:
    return sorted(v for name, v in served.pool.loaded if name == "fraud")


async def test_alias_move_swaps_the_served_version(serve, two_versions, fraud, fraud_v2) -> None:
    expected = {"1": fraud.expected(fraud.rows(0, 8)), "2": fraud_v2.expected(fraud.rows(0, 8))}
    assert not np.allclose(expected["1"]["probabilities"], expected["2"]["probabilities"])
    async with serve(["fraud@production"], registry=two_versions) as served:
        before = await infer(served, fraud)
        assert before.json()["model_version"] == "1"
        np.testing.assert_allclose(probabilities(before), expected["1"]["probabilities"], atol=1e-6)
        assert await served.pool.poll_once() == [], "nothing moved, nothing happens"

        await move(two_versions, 2)
        (event,) = await served.pool.poll_once()
        assert event.ok and event.version == 2 and "1 -> 2" in event.detail
        after = await infer(served, fraud)
        assert after.json()["model_version"] == "2"
        np.testing.assert_allclose(probabilities(after), expected["2"]["probabilities"], atol=1e-6)

        await until(lambda: loaded_versions(served) == [2])  # version 1 retired once idle
        assert (await infer(served, fraud, "/v2/models/fraud/versions/2/infer")).status_code == 200
        gone = await infer(served, fraud, "/v2/models/fraud/versions/1/infer")
        assert gone.status_code == 404
        assert "version 1 is not loaded" in gone.json()["error"] and "[2]" in gone.json()["error"]
        meta = await served.client.get("/v2/models/fraud")
        assert meta.json()["versions"] == ["2"]


async def test_pinned_version_does_not_follow_the_alias(serve, two_versions, fraud) -> None:
    async with serve(["fraud:1"], registry=two_versions) as served:
        await move(two_versions, 2)
        assert await served.pool.poll_once() == []
        assert (await infer(served, fraud)).json()["model_version"] == "1"
        ok = await infer(served, fraud, "/v2/models/fraud/versions/1/infer")
        assert ok.status_code == 200


async def test_hot_swap_under_load_loses_no_request(serve, two_versions, fraud, fraud_v2) -> None:
    rows = fraud.rows(0, 8)
    expected = {
        "1": fraud.expected(rows)["probabilities"],
        "2": fraud_v2.expected(rows)["probabilities"],
    }
    config = PoolConfig(batch=BatchConfig(max_batch_size=32, max_delay_ms=1))
    async with serve(["fraud@production"], registry=two_versions, config=config) as served:
        answered: Counter[str] = Counter()
        failures: list[str] = []
        stop = asyncio.Event()

        async def client() -> None:
            for _ in range(2000):  # bounded even if the test goes wrong
                if stop.is_set():
                    return
                response = await infer(served, fraud)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    continue
                version = response.json()["model_version"]
                answered[version] += 1
                # each answer comes whole from the version it names
                if not np.allclose(probabilities(response), expected[version], atol=1e-6):
                    failures.append(f"version {version} answered with another's probabilities")

        clients = [asyncio.create_task(client()) for _ in range(6)]
        try:
            for target in (2, 1, 2, 1, 2, 1):
                seen = answered[str(target)]
                await move(two_versions, target)
                (event,) = await served.pool.poll_once()
                assert event.ok, event.detail
                await until(lambda t=target, s=seen: answered[str(t)] >= s + 10)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        assert failures == []
        assert answered["1"] >= 30 and answered["2"] >= 30, answered
        await until(lambda: loaded_versions(served) == [1])
        assert served.pool.get("fraud").version == 1


def _hold(model) -> Callable[[], None]:
    """Hold the model's graph calls until the returned function is called."""
    run, gate = model.batcher.run_graph, threading.Event()

    def held_run(feeds):
        gate.wait(5)
        return run(feeds)

    model.batcher.run_graph, model.batcher.inline = held_run, False

    def release() -> None:
        model.batcher.run_graph = run
        gate.set()

    return release


async def test_alias_moving_back_while_the_old_version_drains(serve, two_versions, fraud) -> None:
    config = PoolConfig(batch=BatchConfig(timeout_s=5.0))
    async with serve(["fraud@production"], registry=two_versions, config=config) as served:
        first = served.pool.get("fraud")
        release = _hold(first)
        in_flight = asyncio.create_task(infer(served, fraud))
        await until(lambda: first.in_flight == 1)

        await move(two_versions, 2)
        assert (await served.pool.poll_once())[0].ok  # 1 now drains its in-flight request
        await move(two_versions, 1)
        assert (await served.pool.poll_once())[0].ok  # ... and is wanted back meanwhile
        assert served.pool.get("fraud") is first, "the draining object is served again"
        release()

        response = await in_flight
        assert (response.status_code, response.json()["model_version"]) == (200, "1")
        await until(lambda: loaded_versions(served) == [1])  # 2 retired
        await asyncio.sleep(0.1)  # ten times the drain poll: 1's drain has surely ended
        assert loaded_versions(served) == [1] and first.batcher.worker is not None
        for _ in range(3):
            again = await infer(served, fraud)
            assert again.status_code == 200, again.text
            assert again.json()["model_version"] == "1"


def _artifact_file(registry, tmp_path: Path, version: int) -> Path:
    key = registry.get("fraud", version).artifact_key
    return tmp_path / "artifacts" / key / MODEL


async def test_tampered_artifact_keeps_the_old_version(
    serve, two_versions, fraud, tmp_path
) -> None:
    assert two_versions.register("fraud", fraud.bundle, actor="t").version == 3
    target = _artifact_file(two_versions, tmp_path, 3)
    target.write_bytes(target.read_bytes()[:-10] + b"tampered!!")
    async with serve(["fraud@production"], registry=two_versions) as served:
        await move(two_versions, 3)
        for _ in range(2):  # each poll tries again, and fails again, without harm
            (event,) = await served.pool.poll_once()
            assert event.ok is False and served.pool.history[-1] is event
            assert "fraud:3 failed to load, still serving 1" in event.detail
            assert "verification" in event.detail
            response = await infer(served, fraud)
            assert (response.status_code, response.json()["model_version"]) == (200, "1")
        assert loaded_versions(served) == [1]
        assert (await served.client.get("/v2/health/ready")).status_code == 200


async def test_graph_that_cannot_load_keeps_the_old_version(
    serve, two_versions, fraud, tmp_path
) -> None:
    broken = tmp_path / "broken"
    write_bundle(broken, fraud.manifest, b"this is not an ONNX graph")  # hashes verify
    assert two_versions.register("fraud", broken, actor="t").version == 3
    async with serve(["fraud@production"], registry=two_versions) as served:
        await move(two_versions, 3)
        (event,) = await served.pool.poll_once()
        assert event.ok is False and "ONNX Runtime cannot load" in event.detail
        assert served.pool.history[-1].ok is False
        response = await infer(served, fraud)
        assert (response.status_code, response.json()["model_version"]) == (200, "1")
        # once the alias points at a good version again, the pool follows
        await move(two_versions, 2)
        (event,) = await served.pool.poll_once()
        assert event.ok and (await infer(served, fraud)).json()["model_version"] == "2"


async def test_deleted_alias_keeps_serving_and_records_why(serve, two_versions, fraud) -> None:
    async with serve(["fraud@production"], registry=two_versions) as served:
        await asyncio.to_thread(two_versions.delete_alias, "fraud", "production", actor="t")
        (event,) = await served.pool.poll_once()
        assert event.ok is False and "cannot resolve fraud@production" in event.detail
        assert (await infer(served, fraud)).json()["model_version"] == "1"


async def test_not_ready_without_models(serve, two_versions) -> None:
    async with serve([], registry=two_versions) as served:
        ready = await served.client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"ready": False})
        assert await served.live()
        await served.pool.add("fraud@production")
        assert (await served.client.get("/v2/health/ready")).status_code == 200
        await served.pool.unload("fraud")
        assert (await served.client.get("/v2/health/ready")).status_code == 503
        assert served.pool.loaded == {}


async def test_per_model_batch_settings_apply_to_bundle_directories(serve, fraud, cancer) -> None:
    config = PoolConfig(
        batch=BatchConfig(max_batch_size=64),
        per_model_batch={"fraud": BatchConfig(enabled=False, max_queue_rows=99)},
    )
    async with serve([str(fraud.bundle), str(cancer.bundle)], config=config) as served:
        assert served.pool.get("fraud").batcher.config == config.per_model_batch["fraud"]
        assert served.pool.get("cancer").batcher.config == config.batch
        assert served.pool.get("fraud").batcher.worker is None
