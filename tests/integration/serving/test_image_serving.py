"""An image bundle served in-process: PNG/JPEG and raw tensors in, 400s that say why, and
monitoring that sees per-image summaries. The graph is written with onnx.helper (no torch):
class "top" when the upper half is brighter, "bottom" otherwise."""

from __future__ import annotations

import base64
import io
import struct
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import orjson
import pytest
import tritonclient.grpc.aio as tritonclient
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from ferry.core.bundle import BundleManifest, ImagePreprocessing, write_bundle
from ferry.core.signature import InputSpec, OutputSpec, Signature
from ferry.core.stats import ReferenceStats, categorical_reference, numeric_reference
from ferry.monitoring.metrics import Metrics
from ferry.monitoring.monitor import Monitor, MonitorConfig
from ferry.monitoring.predlog import LogConfig, PredictionLog
from ferry.serving.grpc import build_grpc_server
from ferry.serving.images import MEAN, STD
from ferry.serving.proto import grpc_predict_v2_pb2 as pb
from ferry.serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

pytestmark = pytest.mark.anyio

PREP = ImagePreprocessing(
    input="image", height=8, width=8, color="grayscale", mean=[0.5], std=[0.5]
)


def _graph() -> bytes:
    weights = np.zeros((64, 2), dtype=np.float32)
    weights[:32, 0], weights[32:, 1] = 1.0, 1.0  # top half votes "top", bottom half "bottom"
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "halves",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 2]),
        ],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image-bundle") / "bundle"
    reference = ReferenceStats(
        numeric={
            MEAN: numeric_reference(np.linspace(-1, 1, 200)),
            STD: numeric_reference(np.linspace(0, 1, 200)),
        },
        prediction=categorical_reference(np.asarray(["0", "1"] * 50), "__missing__"),
    )
    manifest = BundleManifest(
        name="halves",
        task="multiclass",
        signature=Signature(
            inputs=[InputSpec(name="image", dtype="float32", kind="image", shape=[-1, 1, 8, 8])],
            outputs=[
                OutputSpec(name="label", dtype="int64", shape=[-1]),
                OutputSpec(name="probabilities", dtype="float32", shape=[-1, 2]),
            ],
        ),
        labels=["top", "bottom"],
        reference=reference,
        preprocessing=PREP,
    )
    onnx.checker.check_model(onnx.load_from_string(_graph()))
    write_bundle(out, manifest, _graph())
    return out


def picture(bright_top: bool, size: int = 8, fmt: str = "PNG") -> str:
    values = np.zeros((size, size), dtype=np.uint8)
    if bright_top:
        values[: size // 2] = 255
    else:
        values[size // 2 :] = 255
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def v2(data: list[Any], datatype: str = "BYTES", shape: list[int] | None = None) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "image", "datatype": datatype, "shape": shape or [len(data)], "data": data}
        ]
    }


async def test_png_and_jpeg_bytes_are_classified(serve: Any, bundle: Path) -> None:
    async with serve([str(bundle)]) as served:
        body = v2([picture(True), picture(False, 32, "JPEG")])
        response = await served.client.post("/v2/models/halves/infer", json=body)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        assert outputs["label"]["data"] == ["top", "bottom"]
        assert outputs["probabilities"]["shape"] == [2, 2]


async def test_records_route_takes_b64_objects(serve: Any, bundle: Path) -> None:
    async with serve([str(bundle)]) as served:
        body = {
            "instances": [{"image": {"b64": picture(False)}}, {"image": {"b64": picture(True)}}]
        }
        response = await served.client.post("/v1/models/halves:predict", json=body)
        assert response.status_code == 200, response.text
        assert [p["label"] for p in response.json()["predictions"]] == ["bottom", "top"]


async def test_raw_tensor_is_served_as_sent(serve: Any, bundle: Path) -> None:
    values = np.zeros((1, 1, 8, 8), dtype=np.float32)
    values[0, 0, 4:] = 1.0
    async with serve([str(bundle)]) as served:
        body = v2(values.reshape(-1).tolist(), "FP32", [1, 1, 8, 8])
        response = await served.client.post("/v2/models/halves/infer", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == ["bottom"]


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (v2([picture(True)[:40]]), ["image 0", "truncated or corrupt"]),
        (v2([base64.b64encode(b"GIF? no, text").decode()]), ["image 0", "not an image"]),
        (v2([0.0] * 49, "FP32", [1, 1, 7, 7]), ["'image'", "[1, 1, 7, 7]", "[n, 1, 8, 8]"]),
        (v2(["%%%"]), ["not valid base64"]),
        ({"instances": [{"image": {"b64": picture(True, 8, "GIF")}}]}, ["format GIF"]),
        ({"instances": [{"pixels": {"b64": picture(True)}}]}, ["instance 0", "'image'"]),
    ],
)
async def test_bad_images_are_400_with_the_reason(
    serve: Any, bundle: Path, body: dict[str, Any], needles: list[str]
) -> None:
    route = "/v2/models/halves/infer" if "inputs" in body else "/v1/models/halves:predict"
    async with serve([str(bundle)]) as served:
        response = await served.client.post(route, json=body)
        assert response.status_code == 400
        message = response.json()["error"]
        for needle in needles:
            assert needle in message


def _labels(response: Any) -> list[str]:
    """The label output of a gRPC response, typed or raw (length-prefixed) contents."""
    index = [o.name for o in response.outputs].index("label")
    if response.raw_output_contents:
        raw, labels, offset = response.raw_output_contents[index], [], 0
        while offset < len(raw):
            (size,) = struct.unpack_from("<I", raw, offset)
            labels.append(raw[offset + 4 : offset + 4 + size].decode())
            offset += 4 + size
        return labels
    return [b.decode() for b in response.outputs[index].contents.bytes_contents]


async def test_grpc_takes_image_files_as_raw_bytes_as_triton_clients_send_them(
    serve: Any, bundle: Path
) -> None:
    files = [base64.b64decode(picture(True)), base64.b64decode(picture(False, 32, "JPEG"))]
    typed = pb.ModelInferRequest(model_name="halves")
    typed.inputs.add(name="image", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        files
    )
    raw = pb.ModelInferRequest(
        model_name="halves",
        raw_input_contents=[b"".join(struct.pack("<I", len(f)) + f for f in files)],
    )
    raw.inputs.add(name="image", datatype="BYTES", shape=[2])
    async with serve([str(bundle)]) as served:
        server, port = build_grpc_server(served.plane)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                for request in (typed, raw):
                    assert _labels(await stub.ModelInfer(request)) == ["top", "bottom"]
                broken = pb.ModelInferRequest(model_name="halves")
                broken.inputs.add(
                    name="image", datatype="BYTES", shape=[1]
                ).contents.bytes_contents.append(files[0][:20])
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ModelInfer(broken)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "image 0" in (caught.value.details() or "")
            triton = tritonclient.InferenceServerClient(f"127.0.0.1:{port}")
            image = tritonclient.InferInput("image", [2], "BYTES")
            image.set_data_from_numpy(np.asarray(files, dtype=object))
            answer = await triton.infer("halves", [image])
            assert answer.as_numpy("label").tolist() == [b"top", b"bottom"]
            await triton.close()
        finally:
            await server.stop(None)


async def test_metadata_declares_the_preprocessing(serve: Any, bundle: Path) -> None:
    async with serve([str(bundle)]) as served:
        meta = (await served.client.get("/v2/models/halves")).json()
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
        assert meta["parameters"]["preprocessing"]["color"] == "grayscale"
        assert meta["parameters"]["preprocessing"]["height"] == 8


async def test_monitoring_logs_image_summaries_not_pixels(
    serve: Any, bundle: Path, tmp_path: Path
) -> None:
    async with serve([str(bundle)]) as served:
        log = PredictionLog(LogConfig(tmp_path / "predictions"))
        monitor = Monitor(Metrics(), MonitorConfig(), log)
        served.plane.on_infer.append(monitor.on_infer)
        body = {
            "instances": [{"image": {"b64": picture(True)}}, {"image": {"b64": picture(False)}}]
        }
        assert (await served.client.post("/v1/models/halves:predict", json=body)).status_code == 200
        await monitor.flush()
    lines = [
        orjson.loads(line)
        for f in (tmp_path / "predictions").rglob("*.jsonl")
        for line in f.read_bytes().splitlines()
    ]
    assert [row["prediction"] for row in lines] == ["top", "bottom"]
    assert set(lines[0]["inputs"]) == {MEAN, STD}
    # Half the pixels at (1 - 0.5) / 0.5 = 1, half at (0 - 0.5) / 0.5 = -1.
    assert lines[0]["inputs"][MEAN] == pytest.approx(0.0)
    assert lines[0]["inputs"][STD] == pytest.approx(1.0)
