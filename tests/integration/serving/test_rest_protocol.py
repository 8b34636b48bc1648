"""Open Inference Protocol V2 over REST, against real bundles: every route, every input form,
and answers equal to running the bundle's graph directly with ONNX Runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

pytestmark = pytest.mark.anyio

PREFIXES = ["/v2/models/fraud", "/v2/models/fraud/versions/1"]


@pytest.fixture(scope="module")
async def served(serve, fraud, cancer, diabetes) -> AsyncIterator[Any]:
    async with serve([str(fraud.bundle), str(cancer.bundle), str(diabetes.bundle)]) as served:
        yield served


def outputs_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in body["outputs"]}


def assert_classified(body: dict[str, Any], expected: dict[str, np.ndarray]) -> None:
    outputs = outputs_by_name(body)
    rows = len(expected["label"])
    assert outputs["label"]["datatype"] == "BYTES"
    assert outputs["label"]["shape"] == [rows]
    assert outputs["label"]["data"] == expected["label"].tolist()
    proba = outputs["probabilities"]
    assert proba["datatype"] == "FP32" and proba["shape"] == [rows, 2]
    got = np.asarray(proba["data"]).reshape(rows, 2)
    np.testing.assert_allclose(got, expected["probabilities"], rtol=0, atol=1e-6)


async def test_health_and_server_metadata(served) -> None:
    live = await served.client.get("/v2/health/live")
    ready = await served.client.get("/v2/health/ready")
    meta = await served.client.get("/v2")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert meta.status_code == 200
    assert meta.json()["name"] == "ferry" and meta.json()["version"]
    assert "model_repository" in meta.json()["extensions"]


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_model_metadata(served, fraud, prefix: str) -> None:
    response = await served.client.get(prefix)
    assert response.status_code == 200
    meta = response.json()
    assert meta["name"] == "fraud" and meta["versions"] == ["1"]
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert list(inputs) == [s.name for s in fraud.specs]
    assert inputs["merchant_category"]["datatype"] == "BYTES"
    assert inputs["amount"] == {"name": "amount", "datatype": "FP32", "shape": [-1, 1]}
    assert inputs["timestamp"]["datatype"] == "FP64"
    outputs = {o["name"]: o["datatype"] for o in meta["outputs"]}
    assert outputs == {"label": "BYTES", "probabilities": "FP32"}
    assert meta["parameters"]["threshold"] == fraud.manifest.threshold


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_model_ready(served, prefix: str) -> None:
    response = await served.client.get(f"{prefix}/ready")
    assert (response.status_code, response.json()) == (200, {"name": "fraud", "ready": True})


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("two_d", [False, True], ids=["shape-n", "shape-n-1"])
async def test_infer_per_column(served, fraud, prefix: str, two_d: bool) -> None:
    rows = fraud.rows(0, 25)
    body = {"id": "req-7", "parameters": {"trace": "abc"}, "inputs": fraud.tensors(rows, two_d)}
    response = await served.client.post(f"{prefix}/infer", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "req-7"
    assert answer["parameters"] == {"trace": "abc"}
    assert (answer["model_name"], answer["model_version"]) == ("fraud", "1")
    assert_classified(answer, fraud.expected(rows))


async def test_infer_covers_both_labels_and_missing_values(served, fraud) -> None:
    rows = fraud.rows(0, 300).copy()
    rows.loc[rows.index[:3], "customer_age"] = np.nan  # nullable in training
    rows.loc[rows.index[3], "merchant_category"] = "never-seen"  # served, counted as unseen
    rows.loc[rows.index[4], "country"] = None
    expected = fraud.expected(rows)
    assert set(expected["label"]) == {"0", "1"}, "the rows should exercise the threshold"
    response = await served.client.post(
        "/v2/models/fraud/infer", json={"inputs": fraud.tensors(rows)}
    )
    assert response.status_code == 200, response.text
    assert_classified(response.json(), expected)


async def test_outputs_subset(served, fraud) -> None:
    rows = fraud.rows(0, 3)
    body = {"inputs": fraud.tensors(rows), "outputs": [{"name": "probabilities"}]}
    response = await served.client.post("/v2/models/fraud/infer", json=body)
    assert response.status_code == 200
    assert [o["name"] for o in response.json()["outputs"]] == ["probabilities"]
    body["outputs"] = [{"name": "label"}]
    response = await served.client.post("/v2/models/fraud/infer", json=body)
    assert [o["name"] for o in response.json()["outputs"]] == ["label"]
    assert response.json()["outputs"][0]["data"] == fraud.expected(rows)["label"].tolist()


def _retyped(tensors: list[dict[str, Any]], name: str, datatype: str, data: list[Any]) -> None:
    for tensor in tensors:
        if tensor["name"] == name:
            tensor["datatype"], tensor["data"] = datatype, data


@pytest.mark.parametrize(
    ("column", "datatype"),
    [
        ("txn_count_24h", "INT64"),
        ("txn_count_24h", "INT32"),
        ("txn_count_24h", "UINT8"),
        ("txn_count_24h", "FP16"),
        ("amount", "FP64"),
        ("card_present", "BOOL"),
        ("card_present", "FP32"),
        ("card_present", "INT64"),
    ],
)
async def test_numeric_datatypes_accepted(served, fraud, column: str, datatype: str) -> None:
    rows = fraud.rows(10, 20)
    tensors = fraud.tensors(rows)
    values = rows[column].tolist()
    data = [bool(v) for v in values] if datatype == "BOOL" else [int(v) for v in values]
    if datatype in ("FP64", "FP32"):
        data = [float(v) for v in values]
    _retyped(tensors, column, datatype, data)
    response = await served.client.post("/v2/models/fraud/infer", json={"inputs": tensors})
    assert response.status_code == 200, response.text
    assert_classified(response.json(), fraud.expected(rows))


@pytest.mark.parametrize("form", ["epoch-fp64", "zulu", "offset", "epoch-in-bytes"])
async def test_datetime_forms(served, fraud, form: str) -> None:
    rows = fraud.rows(30, 10)
    stamps = pd.to_datetime(rows["timestamp"], utc=True)
    epochs = [float(s.timestamp()) for s in stamps]
    data: list[Any] = {
        "epoch-fp64": epochs,
        "zulu": [s.strftime("%Y-%m-%dT%H:%M:%SZ") for s in stamps],
        "offset": [s.tz_convert("Europe/Berlin").isoformat() for s in stamps],
        "epoch-in-bytes": epochs,
    }[form]
    tensors = fraud.tensors(rows)
    _retyped(tensors, "timestamp", "FP64" if form == "epoch-fp64" else "BYTES", data)
    response = await served.client.post("/v2/models/fraud/infer", json={"inputs": tensors})
    assert response.status_code == 200, response.text
    assert_classified(response.json(), fraud.expected(rows))


@pytest.mark.parametrize("route", ["/v2/models/cancer/infer", "/v2/models/cancer/versions/1/infer"])
async def test_single_2d_tensor_on_numeric_bundle(served, cancer, route: str) -> None:
    rows = cancer.rows(0, 40)
    response = await served.client.post(route, json={"inputs": [cancer.matrix(rows)]})
    assert response.status_code == 200, response.text
    assert_classified(response.json(), cancer.expected(rows))
    # and per-column tensors give the same answer
    response = await served.client.post(route, json={"inputs": cancer.tensors(rows)})
    assert_classified(response.json(), cancer.expected(rows))


async def test_single_2d_tensor_rejected_with_categoricals(served, fraud) -> None:
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 11], "data": [[0.0] * 11]}
    response = await served.client.post("/v2/models/fraud/infer", json={"inputs": [tensor]})
    assert response.status_code == 400
    message = response.json()["error"]
    assert "categorical" in message and "merchant_category" in message
    assert "one tensor per column" in message


@pytest.mark.parametrize(
    "route", ["/v1/models/fraud:predict", "/v1/models/fraud/versions/1:predict"]
)
async def test_records_route(served, fraud, route: str) -> None:
    rows = fraud.rows(50, 30)
    response = await served.client.post(route, json={"instances": fraud.records(rows)})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model_name"], answer["model_version"]) == ("fraud", "1")
    expected = fraud.expected(rows)
    predictions = answer["predictions"]
    assert [p["label"] for p in predictions] == expected["label"].tolist()
    for prediction, proba in zip(predictions, expected["probabilities"], strict=True):
        assert list(prediction["probabilities"]) == ["0", "1"]
        got = [prediction["probabilities"]["0"], prediction["probabilities"]["1"]]
        np.testing.assert_allclose(got, proba, atol=1e-6)


async def test_records_missing_nullable_field_is_missing_value(served, fraud) -> None:
    rows = fraud.rows(0, 2).copy()
    records = fraud.records(rows)
    for record in records:
        del record["customer_age"], record["device"]  # nullable numeric, categorical
    rows["customer_age"] = np.nan
    rows["device"] = None
    response = await served.client.post("/v1/models/fraud:predict", json={"instances": records})
    assert response.status_code == 200, response.text
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == fraud.expected(rows)["label"].tolist()


async def test_regression_bundle(served, diabetes) -> None:
    rows = diabetes.rows(0, 20)
    expected = diabetes.expected(rows)["prediction"]
    response = await served.client.post(
        "/v1/models/diabetes:predict", json={"instances": diabetes.records(rows)}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert all(set(p) == {"prediction"} for p in predictions)
    np.testing.assert_allclose([p["prediction"] for p in predictions], expected, rtol=1e-6)
    response = await served.client.post(
        "/v2/models/diabetes/infer", json={"inputs": [diabetes.matrix(rows)]}
    )
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert "label" not in output["name"]
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(-1), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json; charset=utf-8", "application/x-www-form-urlencoded", "text/plain"],
)
async def test_json_body_under_lenient_content_types(served, fraud, content_type) -> None:
    rows = fraud.rows(0, 2)
    headers = {"content-type": content_type} if content_type else {}
    request = served.client.build_request(
        "POST", "/v1/models/fraud:predict", content=orjson.dumps({"instances": fraud.records(rows)})
    )
    request.headers.pop("content-type", None)
    request.headers.update(headers)
    response = await served.client.send(request)
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == fraud.expected(rows)[
        "label"
    ].tolist()
