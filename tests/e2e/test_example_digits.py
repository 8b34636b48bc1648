"""examples/digits end to end: ``ferry train`` the example, ``ferry export --quantize``, then a
real ``ferry serve`` answering PNGs (V2 BYTES over REST and gRPC, records b64) and raw tensors,
and refusing bad images with 400 and the reason."""

from __future__ import annotations

import base64
import io
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from serve_support import Server, run_ferry, start_server

pytestmark = pytest.mark.slow
if not os.environ.get("CI"):  # CI installs the dev extra (torch) and must run these
    pytest.importorskip("torch", reason="PyTorch is not installed: pip install -e '.[torch]'")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits" / "ferry.yaml"
SAMPLES = 12


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("digits-home")
    trained = run_ferry(home, "train", str(EXAMPLE), "--alias", "production", timeout=900)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "registered: digits:1" in trained.stdout
    assert "alias: digits@production -> 1" in trained.stdout
    return home


@pytest.fixture(scope="module")
def server(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(home, tmp_path_factory.mktemp("digits-serve"), ref="digits@production")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, list[str]]:
    """Digits as 8x8 images with their labels, every one a PNG a client could send."""
    from ferry.data.builtin import digits_images

    pixels, labels = digits_images()
    pick = np.random.default_rng(3).choice(len(labels), SAMPLES, replace=False)
    return pixels[pick], [str(v) for v in labels[pick]]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def infer(server: Server, tensor: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/digits/infer", json={"inputs": [tensor]}, timeout=30)


def labels_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return next(o["data"] for o in response.json()["outputs"] if o["name"] == "label")


def test_quantize_registers_an_int8_version(home: Path) -> None:
    run = run_ferry(
        home, "export", "digits@production", "--quantize", "dynamic", "--spec", str(EXAMPLE)
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "registered: digits:2 (INT8 dynamic, parent digits:1)" in run.stdout
    shown = run_ferry(home, "registry", "show", "digits:2")
    assert shown.returncode == 0
    assert re.search(r"parent version\s*│\s*1\s", shown.stdout), shown.stdout


def test_png_as_v2_bytes_and_as_records_b64(
    server: Server, samples: tuple[np.ndarray, list[str]]
) -> None:
    pixels, truth = samples
    encoded = [b64(png(p)) for p in pixels]
    by_tensor = labels_of(
        infer(server, {"name": "image", "datatype": "BYTES", "shape": [SAMPLES], "data": encoded})
    )
    body = {"instances": [{"image": {"b64": e}} for e in encoded]}
    response = httpx.post(f"{server.url}/v1/models/digits:predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    by_record = [p["label"] for p in response.json()["predictions"]]
    assert by_tensor == by_record
    assert sum(a == b for a, b in zip(by_tensor, truth, strict=True)) >= SAMPLES - 1


def test_raw_tensor_prepared_as_the_manifest_says(
    server: Server, samples: tuple[np.ndarray, list[str]]
) -> None:
    pixels, _ = samples
    prep = httpx.get(f"{server.url}/v2/models/digits", timeout=10).json()["parameters"][
        "preprocessing"
    ]
    values = (pixels.astype(np.float32) * prep["scale"] - prep["mean"][0]) / prep["std"][0]
    raw = {
        "name": "image",
        "datatype": "FP32",
        "shape": [SAMPLES, 1, 8, 8],
        "data": values.reshape(-1).tolist(),
    }
    encoded = {
        "name": "image",
        "datatype": "BYTES",
        "shape": [SAMPLES],
        "data": [b64(png(p)) for p in pixels],
    }
    assert labels_of(infer(server, raw)) == labels_of(infer(server, encoded))


def test_png_over_grpc(server: Server, samples: tuple[np.ndarray, list[str]]) -> None:
    import tritonclient.grpc as triton

    pixels, _ = samples
    client = triton.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    image = triton.InferInput("image", [SAMPLES], "BYTES")
    image.set_data_from_numpy(np.asarray([b64(png(p)) for p in pixels], dtype=np.object_))
    result = client.infer("digits", [image])
    by_grpc = [v.decode() for v in result.as_numpy("label").reshape(-1)]
    encoded = {
        "name": "image",
        "datatype": "BYTES",
        "shape": [SAMPLES],
        "data": [b64(png(p)) for p in pixels],
    }
    assert by_grpc == labels_of(infer(server, encoded))


@pytest.mark.parametrize(
    ("tensor", "needles"),
    [
        (
            {"datatype": "BYTES", "shape": [1], "data": ["TRUNCATED"]},
            ["image 0", "PNG data is truncated"],
        ),
        ({"datatype": "BYTES", "shape": [1], "data": [b64(b"just some text")]}, ["not an image"]),
        (
            {"datatype": "FP32", "shape": [1, 1, 7, 8], "data": [0.0] * 56},
            ["[1, 1, 7, 8]", "[n, 1, 8, 8]"],
        ),
    ],
)
def test_bad_images_are_400_with_the_reason(
    server: Server,
    samples: tuple[np.ndarray, list[str]],
    tensor: dict[str, Any],
    needles: list[str],
) -> None:
    if tensor["data"] == ["TRUNCATED"]:
        whole = png(samples[0][0])
        tensor = {**tensor, "data": [b64(whole[: len(whole) // 2])]}
    response = infer(server, {"name": "image", **tensor})
    assert response.status_code == 400
    for needle in needles:
        assert needle in response.json()["error"]
