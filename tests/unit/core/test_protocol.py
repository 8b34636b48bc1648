"""V2 tensor codecs: every datatype, flat and nested data, and shape checks that fail before
anything is allocated."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from ferry.core.protocol import (
    DATATYPES,
    MAX_DIMS,
    datatype_of,
    decode_tensor,
    encode_tensor,
    tensors_by_name,
)
from ferry.errors import SignatureError


def tensor(data: Any, shape: Any, datatype: str = "FP32", name: str = "x") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


NUMERIC_CASES = [
    ("UINT8", [0, 255]),
    ("UINT16", [0, 65535]),
    ("UINT32", [0, 2**32 - 1]),
    ("UINT64", [0, 2**63]),
    ("INT8", [-128, 127]),
    ("INT16", [-32768, 32767]),
    ("INT32", [-(2**31), 2**31 - 1]),
    ("INT64", [-(2**63), 2**63 - 1]),
    ("FP16", [0.5, -2.0]),
    ("FP32", [0.25, 1e30]),
    ("FP64", [0.1, 1e300]),
]


@pytest.mark.parametrize(("datatype", "values"), NUMERIC_CASES)
def test_numeric_datatypes_decode_to_their_dtype(datatype: str, values: list[Any]) -> None:
    array = decode_tensor(tensor(values, [2], datatype))
    assert array.dtype == DATATYPES[datatype]
    assert array.shape == (2,)
    np.testing.assert_array_equal(array, np.asarray(values, dtype=DATATYPES[datatype]))


@pytest.mark.parametrize(("datatype", "values"), NUMERIC_CASES)
def test_encode_then_decode_round_trips(datatype: str, values: list[Any]) -> None:
    array = np.asarray(values, dtype=DATATYPES[datatype]).reshape(2, 1)
    encoded = encode_tensor("y", array)
    assert encoded["datatype"] == datatype and encoded["shape"] == [2, 1]
    assert all(isinstance(v, int | float) for v in encoded["data"])  # JSON-ready
    back = decode_tensor(encoded)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_fp32_values_are_rounded_to_fp32() -> None:
    array = decode_tensor(tensor([0.1], [1], "FP32"))
    assert array.dtype == np.float32 and array[0] == np.float32(0.1)


def test_bool_and_bytes() -> None:
    flags = decode_tensor(tensor([True, False, True], [3], "BOOL"))
    assert flags.dtype == np.bool_ and flags.tolist() == [True, False, True]
    words = decode_tensor(tensor(["a", b"b", None, ""], [4], "BYTES"))
    assert words.dtype == object and words.tolist() == ["a", "b", None, ""]
    assert encode_tensor("w", np.asarray(["x", "y"], dtype=object))["datatype"] == "BYTES"
    assert encode_tensor("w", np.asarray(["x", "y"]))["data"] == ["x", "y"]
    assert encode_tensor("f", np.asarray([True]))["datatype"] == "BOOL"


@pytest.mark.parametrize("bad", ["false", None, 1, 0.0, [True]])
def test_bool_accepts_only_true_and_false(bad: Any) -> None:
    with pytest.raises(SignatureError, match=r"'x'.*BOOL.*true or false"):
        decode_tensor(tensor([True, bad], [2], "BOOL"))


@pytest.mark.parametrize("bad", [[1], {"a": 1}])
def test_bytes_refuse_containers(bad: Any) -> None:
    with pytest.raises(SignatureError, match=r"'x'.*one string per element"):
        decode_tensor(tensor(["a", bad], [2], "BYTES"))


@pytest.mark.parametrize(
    "data",
    [
        [1, 2, 3, 4, 5, 6],
        [[1, 2, 3], [4, 5, 6]],
        [[[1], [2], [3]], [[4], [5], [6]]],
    ],
    ids=["flat", "nested", "deeper"],
)
def test_flat_and_nested_data_give_the_same_tensor(data: list[Any]) -> None:
    array = decode_tensor(tensor(data, [2, 3], "INT64"))
    np.testing.assert_array_equal(array, [[1, 2, 3], [4, 5, 6]])


def test_scalar_data_for_one_element() -> None:
    assert decode_tensor(tensor(7.0, [1])).tolist() == [7.0]
    assert decode_tensor(tensor(7.0, [])).shape == ()
    with pytest.raises(SignatureError, match=r"'x'.*list of values"):
        decode_tensor(tensor(7.0, [2]))


def test_very_deep_nesting_does_not_recurse() -> None:
    data: Any = [1.0]
    for _ in range(50_000):
        data = [data]
    assert decode_tensor(tensor(data, [1])).tolist() == [1.0]


@pytest.mark.parametrize(
    ("shape", "needle"),
    [
        ([10**12], "limit"),
        ([100_000, 100_000], "limit"),
        ([0, 10**30], "limit"),
        ([1] * (MAX_DIMS + 1), "dimensions"),
        ([-1], "negative"),
        ([2, -3], "negative"),
        ("3", "list of integers"),
        ([2.0], "list of integers"),
        ([True], "list of integers"),
        (None, "list of integers"),
    ],
)
def test_shape_checked_before_allocation(shape: Any, needle: str) -> None:
    started = time.perf_counter()
    with pytest.raises(SignatureError, match=needle) as raised:
        decode_tensor(tensor([1.0], shape), max_elements=10_000_000)
    assert time.perf_counter() - started < 0.05, "failed only after doing work"
    assert "'x'" in str(raised.value)


def test_element_limit_is_a_parameter() -> None:
    assert decode_tensor(tensor([1.0] * 4, [4]), max_elements=4).shape == (4,)
    with pytest.raises(SignatureError, match="5 elements, more than the limit of 4"):
        decode_tensor(tensor([1.0] * 5, [5]), max_elements=4)


@pytest.mark.parametrize(
    ("data", "shape"), [([1.0, 2.0], [3]), ([[1.0], [2.0]], [3, 1]), ([], [1])]
)
def test_count_mismatch(data: list[Any], shape: list[int]) -> None:
    with pytest.raises(SignatureError, match=r"'x': shape .* needs \d+ values, data has"):
        decode_tensor(tensor(data, shape))


@pytest.mark.parametrize(
    "data",
    [
        ["abc", 1.0, 2.0],
        [1.0, 2.0, "abc"],
        [1.0, "abc", 2.0],
        [1.0, {"v": 1}, 2.0],
        [1.0, [2.0], 3.0],
    ],
    ids=["first", "last", "middle", "object", "ragged"],
)
def test_non_numbers_in_numeric_tensors(data: list[Any]) -> None:
    with pytest.raises(SignatureError, match=r"'x'.*FP32.*send numbers"):
        decode_tensor(tensor(data, [3]))


def test_null_is_nan_for_floats_and_refused_for_integers() -> None:
    assert np.isnan(decode_tensor(tensor([None, 1.0], [2]))[0])
    with pytest.raises(SignatureError, match=r"'x'.*INT64"):
        decode_tensor(tensor([None, 1], [2], "INT64"))


@pytest.mark.parametrize(("datatype", "value"), [("INT8", 128), ("UINT8", -1), ("INT32", 2**31)])
def test_integers_out_of_range_are_refused(datatype: str, value: int) -> None:
    with pytest.raises(SignatureError, match=f"'x'.*{datatype}"):
        decode_tensor(tensor([value], [1], datatype))


@pytest.mark.parametrize("datatype", ["FP128", "float32", None, 3])
def test_unknown_datatype(datatype: Any) -> None:
    with pytest.raises(SignatureError, match=r"'x'.*unknown datatype.*BYTES"):
        decode_tensor(tensor([1.0], [1], datatype))


def test_datatype_of() -> None:
    assert datatype_of(np.zeros(1, dtype=np.float16)) == "FP16"
    assert datatype_of(np.asarray([b"a"])) == "BYTES"
    with pytest.raises(SignatureError, match="complex128"):
        datatype_of(np.zeros(1, dtype=np.complex128))


def test_fp16_encodes_as_json_floats() -> None:
    encoded = encode_tensor("h", np.asarray([0.5, 1.5], dtype=np.float16))
    assert encoded["data"] == [0.5, 1.5] and all(type(v) is float for v in encoded["data"])


def test_tensors_by_name() -> None:
    a, b = tensor([1.0], [1], name="a"), tensor([1.0], [1], name="b")
    assert list(tensors_by_name([a, b])) == ["a", "b"]
    with pytest.raises(SignatureError, match="'a' is given twice"):
        tensors_by_name([a, b, a])


@pytest.mark.parametrize(
    "bad", [1, "a", {"shape": [1]}, {"name": ["a"]}, {"name": None}, {"name": 3}]
)
def test_tensors_need_a_string_name(bad: Any) -> None:
    with pytest.raises(SignatureError, match="string name"):
        tensors_by_name([bad])
