"""``examples/text`` end to end: ``ferry train`` on the example's spec, a real ``ferry serve``
process, predictions from raw strings over REST V2 and the records route, and bad requests
answered 400 with the text input named."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import serve_support as ss

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "examples" / "text"
REVIEWS = [
    "The battery is not great. Returned it.",
    "Love it!! The SCREEN is brilliant",
    "It does the job. Nothing special.",
    "",
    "Café crème 😀 — très BIEN",
]
PRODUCTS = ["electronics", "electronics", "kitchen", "books", "toys"]
CLOSE = {"rtol": 1e-5, "atol": 1e-6}  # batches of other sizes may round a few ulps apart


@dataclass
class Trained:
    home: Path
    bundle: Path
    stdout: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    home = tmp_path_factory.mktemp("text-home")
    spec = EXAMPLE / "ferry.yaml"
    done = subprocess.run(
        [str(ss.FERRY), "train", str(spec), "--alias", "production", "--time-budget", "15"],
        cwd=home,
        env=ss.ferry_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    bundle = re.search(r"^bundle: (\S+)", done.stdout, re.MULTILINE)
    assert bundle is not None, done.stdout
    return Trained(home, Path(bundle.group(1)), done.stdout)


@pytest.fixture(scope="module")
def server(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ss.Server]:
    tmp = tmp_path_factory.mktemp("text-serve")
    started = ss.start_server(trained.home, tmp, ref="reviews@production")
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


def direct(bundle: Path) -> np.ndarray:
    """The bundle's graph run by ONNX Runtime on the raw strings: what every route must give."""
    from ferry.export.parity import session

    sess = session((bundle / "model.onnx").read_bytes())
    feeds = {
        "review": np.asarray(REVIEWS, dtype=object).reshape(-1, 1),
        "product": np.asarray(PRODUCTS, dtype=object).reshape(-1, 1),
    }
    return np.asarray(sess.run(None, feeds)[1])


def test_training_reports_quality_and_parity(trained: Trained) -> None:
    accuracy = re.search(r"^test: accuracy (\d\.\d+)", trained.stdout, re.MULTILINE)
    assert accuracy is not None and 0.85 <= float(accuracy.group(1)) <= 0.96, trained.stdout
    assert "alias: reviews@production -> 1" in trained.stdout
    manifest = json.loads((trained.bundle / "manifest.json").read_text())
    assert manifest["parity"]["max_abs_diff"] <= 1e-5
    review = next(i for i in manifest["signature"]["inputs"] if i["name"] == "review")
    assert (review["kind"], review["dtype"]) == ("text", "string")


def infer(client: httpx.Client, url: str, inputs: list[dict[str, Any]]) -> httpx.Response:
    return client.post(f"{url}/v2/models/reviews/infer", json={"inputs": inputs})


def text_tensors(reviews: list[Any], datatype: str = "BYTES") -> list[dict[str, Any]]:
    rows = len(reviews)
    return [
        {"name": "review", "datatype": datatype, "shape": [rows, 1], "data": reviews},
        {"name": "product", "datatype": "BYTES", "shape": [rows, 1], "data": PRODUCTS[:rows]},
    ]


def test_v2_and_records_predict_from_raw_strings(trained: Trained, server: ss.Server) -> None:
    expected = direct(trained.bundle)
    with httpx.Client(timeout=30) as client:
        meta = client.get(f"{server.url}/v2/models/reviews").json()
        assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
            "review": "BYTES",
            "product": "BYTES",
        }
        v2 = infer(client, server.url, text_tensors(REVIEWS))
        records = [{"review": r, "product": p} for r, p in zip(REVIEWS, PRODUCTS, strict=True)]
        predicted = client.post(
            f"{server.url}/v1/models/reviews:predict", json={"instances": records}
        )
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(-1, 3)
    np.testing.assert_allclose(probabilities, expected, **CLOSE)
    assert outputs["label"]["data"][:3] == ["negative", "positive", "neutral"]
    assert predicted.status_code == 200, predicted.text
    answers = predicted.json()["predictions"]
    labels = ["negative", "neutral", "positive"]
    by_records = np.asarray([[a["probabilities"][k] for k in labels] for a in answers])
    np.testing.assert_allclose(by_records, expected, **CLOSE)


@pytest.mark.parametrize(
    ("route", "body", "needle"),
    [
        ("infer", {"inputs": text_tensors([5.0], "FP32")}, "input 'review' is text"),
        ("infer", {"inputs": text_tensors([5])}, "input 'review': row 0 holds 5"),
        ("infer", {"inputs": text_tensors(["fine"])[1:]}, "missing ['review']"),
        ("predict", {"instances": [{"review": 5, "product": "toys"}]}, "'review': row 0 holds 5"),
        ("predict", {"instances": [{"product": "toys"}]}, "instance 0 is missing 'review'"),
    ],
    ids=["fp32-tensor", "number-in-bytes", "missing-tensor", "number-record", "missing-field"],
)
def test_bad_text_requests_get_400_naming_the_input(
    server: ss.Server, route: str, body: dict[str, Any], needle: str
) -> None:
    path = "/v2/models/reviews/infer" if route == "infer" else "/v1/models/reviews:predict"
    response = httpx.post(server.url + path, json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]
