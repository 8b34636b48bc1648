"""Requests to graph feeds, checked against a hand-made signature (no bundle, no runtime)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ferry.core.signature import InputSpec, OutputSpec, Signature
from ferry.errors import SignatureError
from ferry.serving.inputs import concat, feeds_from_records, feeds_from_tensors, measure_quality

SIGNATURE = Signature(
    inputs=[
        InputSpec(name="amount", dtype="float32", min=0.0, max=100.0),
        InputSpec(name="age", dtype="float32", nullable=True),
        InputSpec(name="present", dtype="float32", kind="boolean"),
        InputSpec(name="at", dtype="float64", kind="datetime"),
        InputSpec(name="country", dtype="string", kind="categorical", categories=["DE", "US"]),
    ],
    outputs=[OutputSpec(name="label", dtype="int64", shape=[-1])],
)
NUMERIC = Signature(
    inputs=[InputSpec(name="a", dtype="float32"), InputSpec(name="b", dtype="float64")],
    outputs=[OutputSpec(name="variable", dtype="float32", shape=[-1, 1])],
)


def tensors(**changes: dict[str, Any]) -> list[dict[str, Any]]:
    base = {
        "amount": {"datatype": "FP32", "shape": [2], "data": [1.5, 250.0]},
        "age": {"datatype": "FP32", "shape": [2], "data": [None, 40]},
        "present": {"datatype": "BOOL", "shape": [2], "data": [True, False]},
        "at": {"datatype": "BYTES", "shape": [2], "data": ["1970-01-01T00:01:00Z", "1970-01-02"]},
        "country": {"datatype": "BYTES", "shape": [2, 1], "data": [["US"], ["FR"]]},
    }
    return [{"name": name, **base[name], **changes.get(name, {})} for name in base]


def test_tensors_become_typed_columns() -> None:
    feeds, rows = feeds_from_tensors(SIGNATURE, tensors())
    assert rows == 2
    assert {k: (v.dtype, v.shape) for k, v in feeds.items()} == {
        "amount": (np.float32, (2, 1)),
        "age": (np.float32, (2, 1)),
        "present": (np.float32, (2, 1)),
        "at": (np.float64, (2, 1)),
        "country": (object, (2, 1)),
    }
    assert feeds["present"].ravel().tolist() == [1.0, 0.0]
    assert feeds["at"].ravel().tolist() == [60.0, 86400.0]  # naive times are UTC
    assert np.isnan(feeds["age"][0, 0])


def test_records_give_the_same_feeds_as_tensors() -> None:
    records = [
        {"amount": 1.5, "present": True, "at": "1970-01-01T00:01:00Z", "country": "US"},
        {"amount": 250, "age": 40, "present": 0, "at": 86400, "country": "FR"},
    ]
    from_records, rows = feeds_from_records(SIGNATURE, records)
    from_tensors, _ = feeds_from_tensors(SIGNATURE, tensors())
    assert rows == 2
    for name in from_tensors:
        np.testing.assert_array_equal(from_records[name], from_tensors[name])


def test_missing_category_and_unseen_values_are_counted() -> None:
    feeds, _ = feeds_from_tensors(SIGNATURE, tensors(country={"data": [[None], ["FR"]]}))
    assert feeds["country"].ravel().tolist() == ["__missing__", "FR"]
    quality = measure_quality(SIGNATURE, feeds)
    assert quality.missing == {"amount": 0, "age": 1, "present": 0, "at": 0, "country": 1}
    assert quality.unseen == {"country": 1}
    assert quality.out_of_range["amount"] == 1  # 250 > 100


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"amount": {"data": [None, 1.0]}}, "'amount' holds null"),
        ({"at": {"data": [None, "1970-01-02"]}}, "'at' holds null"),
        ({"at": {"data": ["soon", "1970-01-02"]}}, "'at': 'soon' is not a datetime"),
        ({"at": {"data": [True, "1970-01-02"]}}, "'at': True is not a datetime"),
        ({"country": {"datatype": "FP32", "data": [1.0, 2.0]}}, "'country' is categorical"),
        ({"amount": {"datatype": "BYTES", "data": ["1", "2"]}}, "'amount' is numeric"),
        ({"amount": {"shape": [1, 2], "data": [[1.0, 2.0]]}}, "'amount': shape [1, 2] is not"),
        ({"amount": {"shape": [2, 1, 1], "data": [1.0, 2.0]}}, "is not a column"),
        ({"age": {"shape": [1], "data": [3.0]}}, "different row counts"),
    ],
)
def test_bad_tensors_name_the_input(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(SignatureError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        feeds_from_tensors(SIGNATURE, tensors(**changes))


@pytest.mark.parametrize("inputs", [None, [], {}, "x"])
def test_inputs_must_be_a_non_empty_list(inputs: Any) -> None:
    with pytest.raises(SignatureError, match="non-empty list"):
        feeds_from_tensors(SIGNATURE, inputs)


def test_missing_and_unknown_inputs_are_listed() -> None:
    given = [t for t in tensors() if t["name"] != "age"]
    given.append({"name": "colour", "datatype": "FP32", "shape": [2], "data": [1, 2]})
    with pytest.raises(SignatureError, match=r"missing \['age'\], unknown \['colour'\]"):
        feeds_from_tensors(SIGNATURE, given)


def test_single_2d_tensor_on_numeric_signature() -> None:
    matrix = {"name": "input-0", "datatype": "FP64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}
    feeds, rows = feeds_from_tensors(NUMERIC, [matrix])
    assert rows == 2
    assert feeds["a"].dtype == np.float32 and feeds["b"].dtype == np.float64
    assert feeds["a"].ravel().tolist() == [1, 3] and feeds["b"].ravel().tolist() == [2, 4]
    with pytest.raises(SignatureError, match=r"should be \[rows, 2\]"):
        feeds_from_tensors(NUMERIC, [{**matrix, "shape": [1, 4]}])


def test_single_2d_tensor_refused_with_categoricals() -> None:
    matrix = {"name": "m", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}
    with pytest.raises(SignatureError, match=r"categorical inputs.*one tensor per column"):
        feeds_from_tensors(SIGNATURE, [matrix])


@pytest.mark.parametrize(
    ("instances", "needle"),
    [
        (None, "non-empty list"),
        ([], "non-empty list"),
        ([1], "instance 0 must be an object"),
        (
            [{"amount": 1, "present": 1, "at": 0, "colour": "red"}],
            r"unknown field\(s\) \['colour'\]",
        ),
        ([{"present": 1, "at": 0}], "instance 0 is missing 'amount'"),
        ([{"amount": "1", "present": 1, "at": 0}], "instance 0: 'amount' is '1'"),
        ([{"amount": [1], "present": 1, "at": 0}], "'amount' is \\[1\\]"),
        ([{"amount": None, "present": 1, "at": 0}], "'amount' holds null"),
        ([{"amount": 1, "present": 1, "at": None}], "'at' holds null"),
    ],
)
def test_bad_records(instances: Any, needle: str) -> None:
    with pytest.raises(SignatureError, match=needle):
        feeds_from_records(SIGNATURE, instances)


def test_concat_keeps_row_order() -> None:
    one, _ = feeds_from_tensors(
        NUMERIC, [{"name": "m", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]
    )
    two, _ = feeds_from_tensors(
        NUMERIC, [{"name": "m", "datatype": "FP32", "shape": [2, 2], "data": [3, 4, 5, 6]}]
    )
    both = concat([one, two])
    assert both["a"].ravel().tolist() == [1, 3, 5]
    assert concat([one]) is one
