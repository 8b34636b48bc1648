"""The gRPC transport against real bundles, with Ferry's own stubs and with tritonclient.

One module-scoped server runs on a background event loop (the sync clients would otherwise
block the loop that serves them); every answer is compared with the data plane's own answer
to the same V2 request, which is what the REST transport returns.
"""

from __future__ import annotations

import asyncio
import math
import struct
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from ferry.core.spec import parse_spec
from ferry.errors import ErrorCode, FerryError
from ferry.lab import train
from ferry.serving.auth import TokenAuth
from ferry.serving.dataplane import DataPlane
from ferry.serving.grpc import build_grpc_server
from ferry.serving.pool import ModelPool, PoolConfig
from ferry.serving.proto import grpc_predict_v2_pb2 as pb
from ferry.serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

TOKEN = "grpc-test-token"
SEARCH = {"families": ["logistic"], "trials": 1, "time_budget_s": 10, "folds": 2}


@dataclass
class Served:
    loop: asyncio.AbstractEventLoop
    plane: DataPlane
    port: int
    auth_port: int

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("grpc-bundles")
    specs = {
        "bc": {"source": "builtin:breast_cancer", "target": "target"},
        "fraud": {"source": "builtin:fraud", "target": "is_fraud", "rows": 3000},
    }
    return {
        name: train(
            parse_spec({"name": name, "task": "classification", "data": data, "search": SEARCH}),
            root / name,
        ).bundle_dir
        for name, data in specs.items()
    }


@pytest.fixture(scope="module")
def served(bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[Any, ...]:
        pool = ModelPool(None, tmp_path_factory.mktemp("grpc-cache"), PoolConfig())
        for bundle in bundles.values():
            await pool.add(str(bundle))
        plane = DataPlane(pool)
        server, port = build_grpc_server(plane)
        secured, auth_port = build_grpc_server(plane, auth=TokenAuth(predict_tokens=(TOKEN,)))
        await server.start()
        await secured.start()
        return pool, plane, server, port, secured, auth_port

    pool, plane, server, port, secured, auth_port = asyncio.run_coroutine_threadsafe(
        start(), loop
    ).result(timeout=60)
    yield Served(loop, plane, port, auth_port)

    async def stop() -> None:
        await server.stop(None)
        await secured.stop(None)
        await pool.close()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


@pytest.fixture(scope="module")
def stub(served: Served) -> Iterator[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(f"127.0.0.1:{served.port}")
    yield client
    client.close()


# --- request builders -------------------------------------------------------------------


def bc_rows(served: Served, rows: int = 3) -> tuple[list[str], np.ndarray]:
    names = [t["name"] for t in served.plane.model_metadata("bc")["inputs"]]
    rng = np.random.default_rng(7)
    return names, rng.uniform(0.0, 30.0, size=(rows, len(names))).astype(np.float32)


FRAUD: dict[str, tuple[str, list[Any]]] = {
    "amount": ("FP32", [12.5, 830.0, 99.0]),
    "customer_age": ("FP32", [math.nan, 40.0, 23.0]),
    "account_age_days": ("FP32", [100.0, 5.0, 3000.0]),
    "distance_from_home_km": ("FP32", [math.nan, 3.25, 900.0]),
    "txn_count_24h": ("FP32", [1.0, 9.0, 0.0]),
    "card_present": ("FP32", [1.0, 0.0, 0.0]),
    "timestamp": ("BYTES", ["2024-01-05T13:45:00Z", "2024-02-01T00:00:00", "2024-03-30T23:59:59Z"]),
    "merchant_category": ("BYTES", ["grocery", "crypto", "never-seen"]),
    "country": ("BYTES", ["US", "NG", "GB"]),
    "device": ("BYTES", ["pos", "mobile", "desktop"]),
    "customer_segment": ("BYTES", ["A", "B", "A"]),
}


def json_value(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def v2_request(columns: dict[str, tuple[str, list[Any]]]) -> dict[str, Any]:
    """The REST body for the same tensors: what the data plane sees from JSON."""
    return {
        "inputs": [
            {"name": n, "datatype": dt, "shape": [len(v), 1], "data": [json_value(x) for x in v]}
            for n, (dt, v) in columns.items()
        ]
    }


def typed_request(model: str, columns: dict[str, tuple[str, list[Any]]], **kw: Any) -> Any:
    request = pb.ModelInferRequest(model_name=model, **kw)
    for name, (datatype, values) in columns.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(values), 1])
        if datatype == "BYTES":
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        else:
            tensor.contents.fp32_contents.extend(values)
    return request


def raw_bytes(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def raw_request(model: str, columns: dict[str, tuple[str, list[Any]]]) -> Any:
    request = pb.ModelInferRequest(model_name=model)
    for name, (datatype, values) in columns.items():
        request.inputs.add(name=name, datatype=datatype, shape=[len(values), 1])
        request.raw_input_contents.append(
            raw_bytes(values) if datatype == "BYTES" else np.asarray(values, "<f4").tobytes()
        )
    return request


def typed_output(response: Any, name: str) -> np.ndarray:
    out = next(o for o in response.outputs if o.name == name)
    if out.datatype == "BYTES":
        return np.asarray([b.decode() for b in out.contents.bytes_contents]).reshape(out.shape)
    return np.asarray(out.contents.fp32_contents, dtype=np.float32).reshape(out.shape)


def raw_output(response: Any, name: str) -> np.ndarray:
    index = [o.name for o in response.outputs].index(name)
    out, raw = response.outputs[index], response.raw_output_contents[index]
    assert out.datatype == "FP32"
    return np.frombuffer(raw, dtype="<f4").reshape(out.shape)


def plane_proba(served: Served, model: str, body: dict[str, Any]) -> np.ndarray:
    result = served.run(served.plane.infer(model, None, body))
    out = next(o for o in result["outputs"] if o["name"] == "probabilities")
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def assert_still_serving(stub: Any, served: Served) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    names, rows = bc_rows(served, 1)
    columns = {n: ("FP32", rows[:, i].tolist()) for i, n in enumerate(names)}
    assert len(stub.ModelInfer(typed_request("bc", columns)).outputs) == 2


# --- health and metadata ----------------------------------------------------------------


def test_health_and_metadata_with_the_generated_stub(stub: Any, served: Served) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    meta = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "ferry" and "model_repository" in meta.extensions
    assert stub.ModelReady(pb.ModelReadyRequest(name="fraud")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="fraud", version="1")).ready
    model = stub.ModelMetadata(pb.ModelMetadataRequest(name="fraud"))
    expected = served.plane.model_metadata("fraud")
    assert (model.name, list(model.versions), model.platform) == (
        "fraud",
        ["1"],
        expected["platform"],
    )
    got = [(t.name, t.datatype, list(t.shape)) for t in model.inputs]
    assert got == [(t["name"], t["datatype"], t["shape"]) for t in expected["inputs"]]
    assert ("merchant_category", "BYTES", [-1, 1]) in got
    outputs = {t.name: (t.datatype, list(t.shape)) for t in model.outputs}
    assert outputs == {"label": ("BYTES", [-1]), "probabilities": ("FP32", [-1, 2])}


def test_health_and_metadata_with_tritonclient(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("bc") and client.is_model_ready("bc", "1")
    assert client.get_server_metadata(as_json=True)["name"] == "ferry"
    meta = client.get_model_metadata("bc", as_json=True)
    assert meta["name"] == "bc" and len(meta["inputs"]) == 30
    assert meta["inputs"][0] == {"name": "mean_radius", "datatype": "FP32", "shape": ["-1", "1"]}


# --- inference --------------------------------------------------------------------------


def test_typed_and_raw_inference_match_the_data_plane(stub: Any, served: Served) -> None:
    names, rows = bc_rows(served)
    columns = {n: ("FP32", rows[:, i].tolist()) for i, n in enumerate(names)}
    expected = plane_proba(served, "bc", v2_request(columns))

    typed = stub.ModelInfer(typed_request("bc", columns, id="req-7"))
    assert typed.id == "req-7" and (typed.model_name, typed.model_version) == ("bc", "1")
    assert not typed.raw_output_contents
    np.testing.assert_allclose(typed_output(typed, "probabilities"), expected, rtol=1e-6)
    assert set(typed_output(typed, "label").tolist()) <= {"0", "1"}

    raw = stub.ModelInfer(raw_request("bc", columns))
    assert len(raw.raw_output_contents) == 2 and not raw.outputs[1].HasField("contents")
    np.testing.assert_allclose(raw_output(raw, "probabilities"), expected, rtol=1e-6)


def test_one_2d_tensor_typed_and_raw(stub: Any, served: Served) -> None:
    _, rows = bc_rows(served, 4)
    expected = plane_proba(
        served,
        "bc",
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [4, 30], "data": rows.ravel().tolist()}
            ]
        },
    )
    typed = pb.ModelInferRequest(model_name="bc")
    tensor = typed.inputs.add(name="x", datatype="FP32", shape=[4, 30])
    tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    np.testing.assert_allclose(
        typed_output(stub.ModelInfer(typed), "probabilities"), expected, rtol=1e-6
    )
    raw = pb.ModelInferRequest(model_name="bc", raw_input_contents=[rows.astype("<f8").tobytes()])
    raw.inputs.add(name="x", datatype="FP64", shape=[4, 30])
    np.testing.assert_allclose(
        raw_output(stub.ModelInfer(raw), "probabilities"), expected, rtol=1e-6
    )


def test_tritonclient_inference_matches_the_data_plane(
    client: triton.InferenceServerClient, served: Served
) -> None:
    _, rows = bc_rows(served, 5)
    tensor = triton.InferInput("features", [5, 30], "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("bc", [tensor], request_id="tc-1")
    expected = plane_proba(
        served,
        "bc",
        {
            "inputs": [
                {"name": "f", "datatype": "FP32", "shape": [5, 30], "data": rows.ravel().tolist()}
            ]
        },
    )
    assert result.get_response().id == "tc-1"
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-6)
    assert result.as_numpy("label").dtype == object and result.as_numpy("label").shape == (5,)

    only = client.infer("bc", [tensor], outputs=[triton.InferRequestedOutput("probabilities")])
    assert [o.name for o in only.get_response().outputs] == ["probabilities"]
    assert only.as_numpy("label") is None


def test_categorical_bytes_inputs_typed_raw_and_tritonclient(
    stub: Any, client: triton.InferenceServerClient, served: Served
) -> None:
    expected = plane_proba(served, "fraud", v2_request(FRAUD))
    typed = stub.ModelInfer(typed_request("fraud", FRAUD))
    np.testing.assert_allclose(typed_output(typed, "probabilities"), expected, rtol=1e-6)
    raw = stub.ModelInfer(raw_request("fraud", FRAUD))
    np.testing.assert_allclose(raw_output(raw, "probabilities"), expected, rtol=1e-6)

    tensors = []
    for name, (datatype, values) in FRAUD.items():
        tensor = triton.InferInput(name, [3, 1], datatype)
        dtype = object if datatype == "BYTES" else np.float32
        tensor.set_data_from_numpy(np.asarray(values, dtype=dtype).reshape(3, 1))
        tensors.append(tensor)
    result = client.infer("fraud", tensors)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-6)
    labels = result.as_numpy("label")
    assert labels.shape == (3,) and {v.decode() for v in labels} <= {"0", "1"}


def test_outputs_subset_id_and_parameters_are_honoured(stub: Any, served: Served) -> None:
    names, rows = bc_rows(served, 2)
    request = typed_request(
        "bc", {n: ("FP32", rows[:, i].tolist()) for i, n in enumerate(names)}, id="p-1"
    )
    request.outputs.add(name="label")
    request.parameters["flag"].bool_param = True
    request.parameters["count"].int64_param = -3
    request.parameters["note"].string_param = "hi"
    request.parameters["ratio"].double_param = 0.25
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["label"] and response.id == "p-1"
    params = {
        k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()
    }
    assert params == {"flag": True, "count": -3, "note": "hi", "ratio": 0.25}


# --- errors -----------------------------------------------------------------------------


def _bc_typed(served: Served, drop: str | None = None) -> Any:
    names, rows = bc_rows(served, 2)
    columns = {n: ("FP32", rows[:, i].tolist()) for i, n in enumerate(names) if n != drop}
    return typed_request("bc", columns)


def _wrong_contents(served: Served) -> Any:
    request = _bc_typed(served)
    tensor = request.inputs[0]
    tensor.contents.Clear()
    tensor.contents.int_contents.extend([1, 2])
    return request


def _bytes_for_numeric(served: Served) -> Any:
    request = _bc_typed(served)
    tensor = request.inputs[0]
    tensor.datatype = "BYTES"
    tensor.contents.Clear()
    tensor.contents.bytes_contents.extend([b"a", b"b"])
    return request


def _short_data(served: Served) -> Any:
    request = _bc_typed(served)
    del request.inputs[0].contents.fp32_contents[-1]
    return request


def _raw_length(served: Served) -> Any:
    names, rows = bc_rows(served, 2)
    request = raw_request("bc", {n: ("FP32", rows[:, i].tolist()) for i, n in enumerate(names)})
    request.raw_input_contents[3] = request.raw_input_contents[3][:-1]
    return request


def _raw_bytes_truncated(served: Served) -> Any:
    request = raw_request("fraud", FRAUD)
    index = list(FRAUD).index("country")
    request.raw_input_contents[index] = raw_bytes(["US", "NG", "GB"])[:-1]
    return request


def _binary_category(served: Served) -> Any:
    request = raw_request("fraud", FRAUD)
    index = list(FRAUD).index("country")
    request.raw_input_contents[index] = b"".join(
        struct.pack("<I", len(v)) + v for v in (b"US", b"\x89PNG", b"GB")
    )
    return request


def _fp16_typed(served: Served) -> Any:
    request = _bc_typed(served)
    request.inputs[0].datatype = "FP16"
    return request


def _unknown_output(served: Served) -> Any:
    request = _bc_typed(served)
    request.outputs.add(name="nonsense")
    return request


ERRORS = {
    "unknown model": (lambda s: pb.ModelInferRequest(model_name="nope"), "NOT_FOUND", "'nope'"),
    "unknown version": (
        lambda s: pb.ModelInferRequest(model_name="bc", model_version="9"),
        "NOT_FOUND",
        "version 9",
    ),
    "missing input": (lambda s: _bc_typed(s, drop="mean_area"), "INVALID_ARGUMENT", "mean_area"),
    "contents do not match datatype": (_wrong_contents, "INVALID_ARGUMENT", "mean_radius"),
    "BYTES for a numeric input": (_bytes_for_numeric, "INVALID_ARGUMENT", "mean_radius"),
    "shape and data disagree": (_short_data, "INVALID_ARGUMENT", "mean_radius"),
    "raw length does not match shape": (_raw_length, "INVALID_ARGUMENT", "mean_area"),
    "raw BYTES truncated": (_raw_bytes_truncated, "INVALID_ARGUMENT", "country"),
    "binary BYTES for a category": (_binary_category, "INVALID_ARGUMENT", "1 is not valid UTF-8"),
    "FP16 as typed contents": (_fp16_typed, "INVALID_ARGUMENT", "mean_radius"),
    "unknown output": (_unknown_output, "INVALID_ARGUMENT", "nonsense"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_map_to_status_and_name_the_input(case: str, stub: Any, served: Served) -> None:
    build, status, detail = ERRORS[case]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(build(served))
    assert caught.value.code() == getattr(grpc.StatusCode, status)
    assert detail in caught.value.details()
    assert_still_serving(stub, served)


def test_unknown_model_in_metadata_and_ready(
    stub: Any, client: triton.InferenceServerClient
) -> None:
    for call, request in (
        (stub.ModelMetadata, pb.ModelMetadataRequest(name="ghost")),
        (stub.ModelReady, pb.ModelReadyRequest(name="ghost")),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(request)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(InferenceServerException, match="ghost"):
        client.get_model_metadata("ghost")


def test_tritonclient_sees_invalid_argument_with_the_message(
    client: triton.InferenceServerClient,
) -> None:
    tensor = triton.InferInput("mean_radius", [2, 1], "FP32")
    tensor.set_data_from_numpy(np.ones((2, 1), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("bc", [tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "missing" in caught.value.message() and "mean_texture" in caught.value.message()


def test_internal_errors_are_logged_not_leaked(
    stub: Any, served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret at /srv/models/internal.py")

    monkeypatch.setattr(served.plane, "infer", boom)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(_bc_typed(served))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"
    assert "secret" in caplog.text and "Traceback" in caplog.text
    monkeypatch.undo()
    assert_still_serving(stub, served)


def test_overload_is_unavailable_with_a_retry_hint(
    stub: Any, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Busy(FerryError):
        code = ErrorCode.UNAVAILABLE
        retry_after_s = 2

    async def busy(*args: Any, **kwargs: Any) -> Any:
        raise Busy("queue is full; retry shortly")

    monkeypatch.setattr(served.plane, "infer", busy)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(_bc_typed(served))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "queue is full; retry shortly"
    assert ("retry-after", "2") in tuple(caught.value.trailing_metadata())


def test_bearer_token_guards_everything_but_health(served: Served) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{served.auth_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        for metadata, status in (
            ((), grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", "Bearer wrong"),), grpc.StatusCode.PERMISSION_DENIED),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(_bc_typed(served), metadata=metadata)
            assert caught.value.code() == status
        ok = stub.ModelInfer(_bc_typed(served), metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert len(ok.outputs) == 2
    client = triton.InferenceServerClient(f"127.0.0.1:{served.auth_port}")
    try:
        headers = {"authorization": f"Bearer {TOKEN}"}
        assert client.get_model_metadata("bc", headers=headers).name == "bc"
        with pytest.raises(InferenceServerException, match="bearer"):
            client.get_model_metadata("bc")
    finally:
        client.close()


def test_message_size_limit(served: Served) -> None:
    async def start() -> tuple[Any, int]:
        # grpc.aio servers belong to the loop they are built on: build them there.
        small, port = build_grpc_server(served.plane, max_message_bytes=4096)
        await small.start()
        return small, port

    small, port = served.run(start())
    try:
        _, rows = bc_rows(served, 100)
        request = pb.ModelInferRequest(model_name="bc", raw_input_contents=[rows.tobytes()])
        request.inputs.add(name="x", datatype="FP32", shape=[100, 30])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(request)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert stub.ServerLive(pb.ServerLiveRequest()).live
    finally:
        served.run(small.stop(None))


def test_workers_can_share_a_port(served: Served) -> None:
    async def start() -> tuple[list[Any], int]:
        first, port = build_grpc_server(served.plane)
        second, same = build_grpc_server(served.plane, port=port)
        assert same == port
        await first.start()
        await second.start()
        return [first, second], port

    servers, port = served.run(start())
    try:
        for _ in range(4):  # fresh connections, spread by the kernel over both listeners
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
    finally:
        for server in servers:
            served.run(server.stop(None))


def test_a_port_that_cannot_be_bound_is_a_clear_error(served: Served) -> None:
    async def build() -> None:
        build_grpc_server(served.plane, host="203.0.113.1", port=0)  # TEST-NET: not ours

    with pytest.raises(FerryError, match=r"cannot bind gRPC to 203\.0\.113\.1:0"):
        served.run(build())
