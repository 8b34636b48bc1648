"""Canary and shadow serving against a real registry: the canary's share of traffic, sticky
routing keys on every route, explicit versions never rerouted, shadow answers never returned
but compared, metrics and the prediction log, rollout changes under load without a failed
request, and a rollback from the CLI followed by the server."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from ferry.cli.registry import registry_app
from ferry.monitoring.metrics import Metrics, scrape
from ferry.monitoring.monitor import Monitor, MonitorConfig
from ferry.monitoring.predlog import LogConfig, PredictionLog
from ferry.serving.batching import BatchConfig
from ferry.serving.dataplane import Limits
from ferry.serving.grpc import build_grpc_server
from ferry.serving.pool import PoolConfig
from ferry.serving.proto import grpc_predict_v2_pb2 as pb
from ferry.serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from ferry.serving.routing import Rollout, bucket
from ferry.serving.server import FerryServer, ServeConfig, attach_rollout_metrics

pytestmark = pytest.mark.anyio

INFER = "/v2/models/fraud/infer"
PREDICT = "/v1/models/fraud:predict"
CONTENTS = {"BYTES": "bytes_contents", "BOOL": "bool_contents", "FP32": "fp32_contents"}


@pytest.fixture
def versions(registry, fraud, fraud_v2):
    """fraud 1 (``fraud``), 2 (``fraud_v2``), 3 (``fraud`` again); production -> 1."""
    for number, case in enumerate((fraud, fraud_v2, fraud), start=1):
        assert registry.register("fraud", case.bundle, actor="t").version == number
    registry.set_alias("fraud", "production", 1, actor="t")
    return registry


@pytest.fixture
def rows(fraud):
    """Unseen rows without missing values (typed gRPC contents have no null)."""
    return fraud.frame.dropna().reset_index(drop=True)


@pytest.fixture
def expected(fraud, fraud_v2, rows) -> dict[str, Any]:
    """Each version's probabilities for the first 8 complete rows."""
    first, second = (c.expected(rows.iloc[:8])["probabilities"] for c in (fraud, fraud_v2))
    return {"1": first, "2": second, "3": first}


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        assert time.perf_counter() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def alias(registry, name: str, version: int, weight: float | None = None) -> None:
    await asyncio.to_thread(registry.set_alias, "fraud", name, version, actor="t", weight=weight)


async def unalias(registry, name: str) -> None:
    await asyncio.to_thread(registry.delete_alias, "fraud", name, actor="t")


def loaded_versions(served) -> list[int]:
    return sorted(v for name, v in served.pool.loaded if name == "fraud")


def probabilities(payload: dict[str, Any]) -> np.ndarray:
    outputs = {o["name"]: o for o in payload["outputs"]}
    return np.asarray(outputs["probabilities"]["data"]).reshape(-1, 2)


def keyed(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {**body, "parameters": {"routing_key": key}}


def keyed_records(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {**body, "routing_key": key}


def series(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


class Watched:
    """Monitoring attached to a served app as the server attaches it, plus the shadow hooks'
    calls as the tests see them."""

    def __init__(self, served: Any, log_dir: Path) -> None:
        self.metrics = Metrics()
        self.log = PredictionLog(LogConfig(log_dir))
        self.monitor = Monitor(self.metrics, MonitorConfig(), self.log)
        self.compared: list[tuple[str, int, int, int]] = []
        self.skipped: list[str] = []
        self.failed: list[tuple[str, int]] = []
        plane = served.plane
        plane.on_infer.append(self.monitor.on_infer)
        plane.feedback_handler = self.monitor.add_feedback
        plane.scraper = lambda: scrape(self.metrics)
        attach_rollout_metrics(plane, served.pool, self.metrics)
        plane.on_shadow.append(lambda *args: self.compared.append(args))
        plane.on_shadow_skipped.append(self.skipped.append)
        plane.on_shadow_failed.append(lambda *args: self.failed.append(args))

    def text(self) -> str:
        return scrape(self.metrics)[0].decode()

    def logged(self) -> list[dict[str, Any]]:
        return list(self.log.read("fraud"))


@pytest.fixture
def watch(tmp_path: Path) -> Callable[[Any], Watched]:
    return lambda served: Watched(served, tmp_path / "predictions")


# ---- canary ------------------------------------------------------------------------------


async def test_the_canary_takes_its_share_of_traffic(
    serve, versions, fraud, rows, expected, watch
) -> None:
    await alias(versions, "canary", 2, weight=0.3)
    body = {"inputs": fraud.tensors(rows.iloc[:8])}
    async with serve(["fraud@production"], registry=versions) as served:
        rollout = served.pool.primary("fraud").rollout
        assert rollout is not None and rollout.canary is not None  # loaded with the primary
        assert (rollout.canary.version, rollout.weight, rollout.shadow) == (2, 0.3, None)
        watched = watch(served)
        answered: Counter[str] = Counter()
        wrong: list[str] = []

        async def client(requests: int) -> None:
            for _ in range(requests):
                response = await served.client.post(INFER, json=body)
                assert response.status_code == 200, response.text
                payload = response.json()
                version = payload["model_version"]
                answered[version] += 1
                if not np.allclose(probabilities(payload), expected[version], atol=1e-6):
                    wrong.append(version)

        await asyncio.gather(*(client(250) for _ in range(8)))
        await watched.monitor.flush()

    assert sum(answered.values()) == 2000 and set(answered) == {"1", "2"}
    assert abs(answered["2"] / 2000 - 0.3) <= 0.05, answered
    assert wrong == []  # each answer came whole from the version it names
    text = watched.text()
    by_role = {
        role: series(text, "ferry_rollout_requests_total", version=v, role=role)
        for v, role in (("1", "primary"), ("2", "canary"))
    }
    assert by_role == {"primary": answered["1"], "canary": answered["2"]}
    logged = watched.logged()
    assert Counter(row.get("role", "primary") for row in logged) == {
        "primary": 8 * answered["1"],
        "canary": 8 * answered["2"],
    }
    assert {row["version"] for row in logged if row.get("role") == "canary"} == {2}


@asynccontextmanager
async def grpc_stub(plane: Any) -> AsyncIterator[Any]:
    server, port = build_grpc_server(plane, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await server.stop(None)


def grpc_request(tensors: list[dict[str, Any]], key: str | None, version: str = "") -> Any:
    request = pb.ModelInferRequest(model_name="fraud", model_version=version)
    for t in tensors:
        tensor = request.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        values = [v.encode() for v in t["data"]] if t["datatype"] == "BYTES" else t["data"]
        getattr(tensor.contents, CONTENTS[t["datatype"]]).extend(values)
    if key is not None:
        request.parameters["routing_key"].string_param = key
    return request


async def test_a_routing_key_gets_the_same_version_on_every_route(
    serve, versions, fraud, rows
) -> None:
    await alias(versions, "canary", 2, weight=0.5)
    tensors = fraud.tensors(rows.iloc[:2])
    body = {"inputs": tensors}
    records = {"instances": fraud.records(rows.iloc[:2])}
    seen: dict[str, set[str]] = {}
    async with (
        serve(["fraud@production"], registry=versions) as served,
        grpc_stub(served.plane) as stub,
    ):
        for index in range(40):
            key = f"user-{index}"
            answers = seen.setdefault(key, set())
            for _ in range(3):
                response = await served.client.post(INFER, json=keyed(body, key))
                answers.add(response.json()["model_version"])
            for _ in range(2):
                response = await served.client.post(PREDICT, json=keyed_records(records, key))
                answers.add(response.json()["model_version"])
            answer = await stub.ModelInfer(grpc_request(tensors, key))
            answers.add(answer.model_version)

    assert all(len(answers) == 1 for answers in seen.values()), seen
    # The documented rule, so that every replica (and any other client) can predict it.
    assert {k: a.pop() for k, a in seen.items()} == {
        k: "2" if bucket("fraud", k) < 0.5 else "1" for k in seen
    }


async def test_explicit_versions_are_never_rerouted(serve, versions, fraud, rows) -> None:
    await alias(versions, "canary", 2, weight=1.0)  # every unversioned request goes to 2
    tensors = fraud.tensors(rows.iloc[:2])
    records = {"instances": fraud.records(rows.iloc[:2])}
    async with (
        serve(["fraud@production"], registry=versions) as served,
        grpc_stub(served.plane) as stub,
    ):
        for _ in range(20):
            routed = await served.client.post(INFER, json={"inputs": tensors})
            assert routed.json()["model_version"] == "2"
            pinned = await served.client.post(
                "/v2/models/fraud/versions/1/infer", json=keyed({"inputs": tensors}, "x")
            )
            assert pinned.json()["model_version"] == "1"
            pinned = await served.client.post(
                "/v1/models/fraud/versions/1:predict", json=keyed_records(records, "x")
            )
            assert pinned.json()["model_version"] == "1"
            answer = await stub.ModelInfer(grpc_request(tensors, "x", version="1"))
            assert answer.model_version == "1"


async def test_weight_moves_and_removal_follow_the_registry(serve, versions, watch) -> None:
    await alias(versions, "canary", 2, weight=0.3)
    async with serve(["fraud@production"], registry=versions) as served:
        watched = watch(served)
        primary = served.pool.primary("fraud")

        def gauge(version: str) -> float | None:
            return series(watched.text(), "ferry_rollout_canary_weight", version=version)

        await alias(versions, "canary", 2, weight=0.6)
        (event,) = await served.pool.poll_once()
        assert event.ok and "weight 0.6" in event.detail
        assert primary.rollout is not None and primary.rollout.weight == 0.6
        assert gauge("2") == 0.6

        await alias(versions, "canary", 3, weight=0.6)
        (event,) = await served.pool.poll_once()
        assert event.ok and "fraud@canary 2 -> 3" in event.detail
        assert (gauge("2"), gauge("3")) == (0.0, 0.6)
        await until(lambda: loaded_versions(served) == [1, 3])  # 2 retired

        await alias(versions, "canary", 3)  # no weight: asks for no traffic
        (event,) = await served.pool.poll_once()
        assert "fraud@canary removed" in event.detail and primary.rollout is None
        assert gauge("3") == 0.0
        await until(lambda: loaded_versions(served) == [1])
        assert await served.pool.poll_once() == []


async def test_a_poll_is_one_registry_query_per_model(serve, versions) -> None:
    await alias(versions, "canary", 2, weight=0.3)
    await alias(versions, "shadow", 3)
    async with serve(["fraud@production"], registry=versions) as served:
        statements: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        engine = versions.store._engine
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            assert await served.pool.poll_once() == []
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
    queries = [s for s in statements if s.strip().upper() != "BEGIN"]  # SQLite's own BEGIN
    assert len(queries) == 1 and queries[0].lstrip().upper().startswith("SELECT"), statements


async def test_model_metadata_lists_the_rollout(serve, versions) -> None:
    await alias(versions, "canary", 2, weight=0.25)
    await alias(versions, "shadow", 3)
    async with serve(["fraud@production"], registry=versions) as served:
        meta = (await served.client.get("/v2/models/fraud")).json()
        assert meta["versions"] == ["1"]
        assert meta["parameters"]["rollout"] == {
            "canary": {"version": "2", "weight": 0.25},
            "shadow": {"version": "3"},
        }
        pinned = (await served.client.get("/v2/models/fraud/versions/2")).json()
        assert pinned["versions"] == ["2"] and "rollout" not in pinned["parameters"]


# ---- shadow ------------------------------------------------------------------------------


async def test_shadow_answers_are_compared_and_never_returned(
    serve, versions, fraud, fraud_v2, rows, watch
) -> None:
    await alias(versions, "shadow", 2)
    sample = rows.iloc[:400]
    labels = {"1": fraud.expected(sample)["label"], "2": fraud_v2.expected(sample)["label"]}
    differing = int(np.count_nonzero(labels["1"] != labels["2"]))
    assert differing > 0, "the two bundles must disagree somewhere for this test to mean much"
    first = fraud.expected(sample)["probabilities"]
    async with serve(["fraud@production"], registry=versions) as served:
        watched = watch(served)
        for start in range(0, 400, 40):
            part = sample.iloc[start : start + 40]
            response = await served.client.post(
                INFER, json={"id": f"r{start}", "inputs": fraud.tensors(part)}
            )
            payload = response.json()
            assert (response.status_code, payload["model_version"]) == (200, "1")
            np.testing.assert_allclose(probabilities(payload), first[start : start + 40], atol=1e-6)
        records = {"id": "rec", "instances": fraud.records(sample.iloc[:5])}
        predicted = (await served.client.post(PREDICT, json=records)).json()
        assert predicted["model_version"] == "1"
        assert [p["label"] for p in predicted["predictions"]] == labels["1"][:5].tolist()
        await served.plane.settle_shadows()
        labelled = [{"id": "r0/3", "label": "1"}, {"id": "rec/1", "label": "0"}]
        joined = (await served.client.post("/v2/models/fraud/feedback", json=labelled)).json()
        await watched.monitor.flush()

    disagreeing_in_first_five = int(np.count_nonzero(labels["1"][:5] != labels["2"][:5]))
    assert sum(c[2] for c in watched.compared) == 405
    assert sum(c[3] for c in watched.compared) == differing + disagreeing_in_first_five
    assert {(c[0], c[1]) for c in watched.compared} == {("fraud", 2)}
    text = watched.text()
    assert series(text, "ferry_rollout_shadow_rows_total", version="2") == 405
    assert series(text, "ferry_rollout_shadow_disagreements_total", version="2") == (
        differing + disagreeing_in_first_five
    )
    assert series(text, "ferry_rollout_requests_total", version="2") is None  # never answered
    assert series(text, "ferry_prediction_class_total", version="2") is None
    # Late labels judge only the answer returned: the shadow's rows never join.
    assert joined == {"matched": 2, "unknown": 0}
    assert set(watched.monitor.feedback) == {("fraud", 1)}
    logged = watched.logged()
    shadow_rows = [row for row in logged if row.get("role") == "shadow"]
    primary_rows = [row for row in logged if "role" not in row]
    assert len(shadow_rows) == len(primary_rows) == 405
    assert {row["version"] for row in shadow_rows} == {2}
    assert {row["version"] for row in primary_rows} == {1}
    by_id = {row["id"]: row["prediction"] for row in shadow_rows}
    assert [by_id[f"r0/{i}"] for i in range(40)] == labels["2"][:40].tolist()


async def test_a_failing_or_busy_shadow_never_reaches_the_client(
    serve, versions, fraud, rows, watch
) -> None:
    await alias(versions, "shadow", 2)
    body = {"inputs": fraud.tensors(rows.iloc[:4])}
    limits = Limits(max_shadow_pending=1)
    async with serve(["fraud@production"], registry=versions, limits=limits) as served:
        watched = watch(served)
        shadow = served.pool.primary("fraud").rollout.shadow
        original, gate = shadow.run, asyncio.Event()

        async def held(feeds: Any, count: int) -> Any:
            await gate.wait()
            return await original(feeds, count)

        shadow.run = held
        for _ in range(5):  # the first is mirrored and waits; the other four find no room
            assert (await served.client.post(INFER, json=body)).json()["model_version"] == "1"
        assert watched.skipped == ["fraud"] * 4
        gate.set()
        await served.plane.settle_shadows()
        assert [c[2] for c in watched.compared] == [4]

        async def broken(feeds: Any, count: int) -> Any:
            raise RuntimeError("shadow graph exploded")

        shadow.run = broken
        for _ in range(3):
            response = await served.client.post(INFER, json=body)
            assert (response.status_code, response.json()["model_version"]) == (200, "1")
        await served.plane.settle_shadows()
        assert watched.failed == [("fraud", 2)] * 3
        text = watched.text()
        assert series(text, "ferry_rollout_shadow_skipped_total", model="fraud") == 4
        assert series(text, "ferry_rollout_shadow_failures_total", version="2") == 3


# ---- changes under load ------------------------------------------------------------------


async def test_rollout_changes_under_load_fail_no_request(
    serve, versions, fraud, rows, expected, watch
) -> None:
    body = {"inputs": fraud.tensors(rows.iloc[:8])}
    records = {"instances": fraud.records(rows.iloc[:8])}
    config = PoolConfig(batch=BatchConfig(max_batch_size=32, max_delay_ms=1))
    async with serve(["fraud@production"], registry=versions, config=config) as served:
        watched = watch(served)
        answered: Counter[str] = Counter()
        failures: list[str] = []
        stop = asyncio.Event()

        async def client(index: int) -> None:
            randomly = random.Random(index)
            for _ in range(3000):  # bounded even if the test goes wrong
                if stop.is_set():
                    return
                key = f"user-{randomly.randrange(1000)}"
                if index % 3 == 0:
                    response = await served.client.post(PREDICT, json=keyed_records(records, key))
                else:
                    response = await served.client.post(INFER, json=keyed(body, key))
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    continue
                payload = response.json()
                answered[payload["model_version"]] += 1
                if index % 3 and not np.allclose(
                    probabilities(payload), expected[payload["model_version"]], atol=1e-6
                ):
                    failures.append(f"version {payload['model_version']} answered wrongly")

        async def step(change: Callable[[], Any], check: Callable[[], bool]) -> None:
            await change()
            for event in await served.pool.poll_once():
                assert event.ok, event.detail
            seen = sum(answered.values())
            await until(lambda: check() and sum(answered.values()) >= seen + 30)

        clients = [asyncio.create_task(client(i)) for i in range(6)]
        try:
            await step(lambda: alias(versions, "canary", 2, weight=0.5), lambda: answered["2"] > 0)
            await step(lambda: alias(versions, "shadow", 3), lambda: bool(watched.compared))
            # Promotion: production to the canary's version and the canary removed, one poll.
            await step(lambda: alias(versions, "production", 2), lambda: True)
            await step(lambda: unalias(versions, "canary"), lambda: True)
            assert served.pool.primary("fraud").rollout.canary is None
            # Roll back, then a new canary that is promoted while the shadow is removed.
            await step(
                lambda: asyncio.to_thread(versions.rollback, "fraud", actor="t"), lambda: True
            )
            assert served.pool.get("fraud").version == 1
            await step(lambda: alias(versions, "canary", 3, weight=0.3), lambda: True)
            await step(lambda: _promote_and_clear(versions, 3), lambda: True)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        await served.plane.settle_shadows()
        assert failures == []
        assert watched.failed == []
        assert answered["1"] > 30 and answered["2"] > 30 and answered["3"] > 30, answered
        await until(lambda: loaded_versions(served) == [3])
        assert served.pool.primary("fraud").rollout is None


async def _promote_and_clear(registry, version: int) -> None:
    await alias(registry, "production", version)
    await unalias(registry, "canary")
    await unalias(registry, "shadow")


async def test_a_rollback_from_the_cli_is_followed_by_the_server(
    serve, versions, fraud, rows, tmp_path
) -> None:
    await alias(versions, "production", 2)
    body = {"inputs": fraud.tensors(rows.iloc[:2])}
    env = {
        "FERRY_HOME": str(tmp_path / "home"),
        "FERRY_REGISTRY_URL": f"sqlite:///{tmp_path}/registry.db",
        "FERRY_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "FERRY_ACTOR": "oncall",
    }
    async with serve(["fraud@production"], registry=versions) as served:
        assert (await served.client.post(INFER, json=body)).json()["model_version"] == "2"
        result = await asyncio.to_thread(
            CliRunner().invoke,
            registry_app,
            ["rollback", "fraud", "--reason", "errors up"],
            env=env,
        )
        assert result.exit_code == 0, (result.output, result.exception)
        assert "fraud:2 -> fraud:1" in result.output
        (event,) = await served.pool.poll_once()
        assert event.ok and "moved 2 -> 1" in event.detail
        assert (await served.client.post(INFER, json=body)).json()["model_version"] == "1"
    rollback = versions.events("fraud", limit=1)[0]
    assert (rollback.kind, rollback.actor, rollback.reason) == ("rollback", "oncall", "errors up")
    assert orjson.loads(orjson.dumps(rollback.details)) == {
        "alias": "production",
        "from": 2,
        "to": 1,
    }


async def test_the_server_wires_rollout_metrics(tmp_path) -> None:
    config = ServeConfig(refs=[], cache_dir=tmp_path / "cache", log_dir=tmp_path / "log")
    server = FerryServer(config, alerting=False)
    plane, pool = server.plane, server.pool
    canary: Any = type("Version", (), {"version": 4})()
    for hook in plane.on_shadow:
        hook("fraud", 5, 10, 3)
    for skipped in plane.on_shadow_skipped:
        skipped("fraud")
    for failed in plane.on_shadow_failed:
        failed("fraud", 5)
    for moved in pool.on_rollout:
        moved("fraud", Rollout(), Rollout(canary=canary, weight=0.2))
    text = plane.scrape()[0].decode()
    assert series(text, "ferry_rollout_shadow_rows_total", version="5") == 10
    assert series(text, "ferry_rollout_shadow_disagreements_total", version="5") == 3
    assert series(text, "ferry_rollout_shadow_skipped_total", model="fraud") == 1
    assert series(text, "ferry_rollout_shadow_failures_total", version="5") == 1
    assert series(text, "ferry_rollout_canary_weight", version="4") == 0.2
    assert plane.on_infer and server.monitor is not None
