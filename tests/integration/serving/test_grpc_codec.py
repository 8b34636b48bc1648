"""The gRPC codec on its own: protobuf tensors <-> the data plane's V2 dicts, every datatype."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from ferry.core.protocol import decode_tensor
from ferry.errors import SignatureError
from ferry.serving.grpc import CONTENTS_FIELD, request_to_v2, response_from_v2
from ferry.serving.proto import grpc_predict_v2_pb2 as pb

SAMPLES: dict[str, list[Any]] = {
    "BOOL": [True, False, True, True],
    "INT8": [-128, 0, 5, 127],
    "INT16": [-32768, 1, 2, 32767],
    "INT32": [-(2**31), 0, 7, 2**31 - 1],
    "INT64": [-(2**63), 0, 9, 2**63 - 1],
    "UINT8": [0, 1, 200, 255],
    "UINT16": [0, 1, 2, 65535],
    "UINT32": [0, 1, 2, 2**32 - 1],
    "UINT64": [0, 1, 2, 2**53],
    "FP32": [0.5, -1.25, 3.0e38, float("nan")],
    "FP64": [0.1, -2.5, 1e300, float("inf")],
    "BYTES": ["a", "", "naïve ☕", "x" * 300],
}
DTYPES = {
    "BOOL": "?", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "<u1",
    "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip


def raw_of(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        encoded = [v.encode() for v in values]
        return b"".join(struct.pack("<I", len(b)) + b for b in encoded)
    return np.asarray(values, dtype=DTYPES[datatype]).tobytes()


def one_input(datatype: str, values: list[Any], raw: bool, shape: list[int] | None = None) -> Any:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="t", datatype=datatype, shape=shape or [2, len(values) // 2])
    if raw:
        request.raw_input_contents.append(raw_of(datatype, values))
    elif not values:
        pass
    elif datatype == "BYTES":
        tensor.contents.bytes_contents.extend(v.encode() for v in values)
    else:
        getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
    return request


def decoded(request: Any) -> np.ndarray:
    return decode_tensor(request_to_v2(request)["inputs"][0])


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_typed_and_raw_inputs_decode_to_the_same_array(datatype: str) -> None:
    values = SAMPLES[datatype]
    typed, raw = (
        decoded(one_input(datatype, values, False)),
        decoded(one_input(datatype, values, True)),
    )
    assert typed.shape == raw.shape == (2, 2)
    expected = np.asarray(values, dtype=object if datatype == "BYTES" else DTYPES[datatype])
    np.testing.assert_array_equal(typed.ravel(), expected)
    np.testing.assert_array_equal(raw.ravel(), expected)


@pytest.mark.parametrize("raw", [False, True])
def test_uint64_keeps_its_full_range(raw: bool) -> None:
    values = [0, 2**63, 2**64 - 1, 2**53 + 1]
    np.testing.assert_array_equal(
        decoded(one_input("UINT64", values, raw)).ravel(), np.asarray(values, dtype=np.uint64)
    )


def test_fp16_travels_raw_only() -> None:
    values = [0.5, -2.0, 65504.0, 1.0]
    np.testing.assert_array_equal(decoded(one_input("FP16", values, True)).ravel(), values)
    with pytest.raises(SignatureError, match=r"'t'.*raw_input_contents"):
        request_to_v2(one_input("FP16", [], False))


@pytest.mark.parametrize("datatype", [d for d in SAMPLES if d != "FP64"])
def test_responses_typed_and_raw_carry_the_same_values(datatype: str) -> None:
    values = SAMPLES[datatype]
    v2 = {
        "model_name": "m",
        "model_version": "3",
        "id": "r",
        "outputs": [{"name": "o", "datatype": datatype, "shape": [4], "data": values}],
    }
    typed, raw = response_from_v2(v2, raw=False), response_from_v2(v2, raw=True)
    assert (typed.id, typed.model_version, raw.outputs[0].shape) == ("r", "3", [4])
    assert not typed.raw_output_contents and not raw.outputs[0].HasField("contents")
    got = list(getattr(typed.outputs[0].contents, CONTENTS_FIELD[datatype]))
    if datatype == "BYTES":
        assert [b.decode() for b in got] == values
    else:
        np.testing.assert_array_equal(
            np.asarray(got, dtype=DTYPES[datatype]), np.asarray(values, dtype=DTYPES[datatype])
        )
    assert raw.raw_output_contents[0] == raw_of(datatype, values)


def test_fp16_or_non_string_outputs() -> None:
    v2 = {
        "model_name": "m",
        "model_version": "1",
        "outputs": [
            {"name": "h", "datatype": "FP16", "shape": [2], "data": [0.5, 1.5]},
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": [0, "yes"]},
        ],
    }
    response = response_from_v2(v2, raw=False)  # FP16 has no typed field: all raw
    assert np.frombuffer(response.raw_output_contents[0], "<f2").tolist() == [0.5, 1.5]
    assert response.raw_output_contents[1] == raw_of("BYTES", ["0", "yes"])


def test_parameters_round_trip_with_their_types() -> None:
    request = one_input("FP32", [1.0, 2.0], False)
    request.parameters["b"].bool_param = False
    request.parameters["u"].uint64_param = 2**64 - 1
    request.parameters["d"].double_param = 1.5
    request.parameters["s"].string_param = "x"
    params = request_to_v2(request)["parameters"]
    assert params == {"b": False, "u": 2**64 - 1, "d": 1.5, "s": "x"}
    response = response_from_v2(
        {"model_name": "m", "model_version": "1", "outputs": [], "parameters": params}, raw=False
    )
    assert {k: v.WhichOneof("parameter_choice") for k, v in response.parameters.items()} == {
        "b": "bool_param",
        "u": "uint64_param",
        "d": "double_param",
        "s": "string_param",
    }


def bad_bytes(raw: bytes, count: int = 2) -> Any:
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=[raw])
    request.inputs.add(name="t", datatype="BYTES", shape=[count])
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (bad_bytes(struct.pack("<I", 1) + b"a"), "at least 8 bytes"),
        (bad_bytes(struct.pack("<I", 20) + b"abc" + b"\0" * 8), "element 0 runs past"),
        (bad_bytes(raw_of("BYTES", ["a", "b"]) + b"!"), "1 bytes after"),
        (bad_bytes(b"", count=10**12), "at least 4000000000000 bytes"),
        (one_input("INT32", [1, 2], True, shape=[-1, -2]), "negative dimension"),
        (one_input("FP32", [1.0, 2.0], True, shape=[3]), r"needs 12 bytes.*got 8"),
        (one_input("COMPLEX", [], False), "unknown datatype 'COMPLEX'"),
    ],
)
def test_bad_raw_inputs_are_rejected_before_decoding(request_: Any, message: str) -> None:
    with pytest.raises(SignatureError, match=message) as caught:
        request_to_v2(request_)
    assert "'t'" in str(caught.value)


def test_bytes_that_are_not_utf8_pass_as_bytes_for_image_inputs() -> None:
    """Raw PNG/JPEG bytes, as Triton clients send images; string inputs refuse them later."""
    raw = bad_bytes(raw_of("BYTES", ["a"]) + struct.pack("<I", 2) + b"\x89P")
    assert request_to_v2(raw)["inputs"][0]["data"] == ["a", b"\x89P"]
    typed = pb.ModelInferRequest(model_name="m")
    tensor = typed.inputs.add(name="t", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([b"a", b"\xff\xd8"])
    decoded = decode_tensor(request_to_v2(typed)["inputs"][0])
    assert decoded.tolist() == ["a", b"\xff\xd8"]


def test_raw_must_cover_every_input_and_exclude_contents() -> None:
    request = one_input("FP32", [1.0, 2.0], True)
    request.inputs.add(name="u", datatype="FP32", shape=[1])
    with pytest.raises(SignatureError, match="1 entries for 2 inputs"):
        request_to_v2(request)
    mixed = one_input("FP32", [1.0, 2.0], True)
    mixed.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(SignatureError, match="'t': contents and raw_input_contents"):
        request_to_v2(mixed)
