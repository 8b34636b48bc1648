"""Text inputs in requests: strings as sent (an empty review is valid), errors naming the input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ferry.core.signature import InputSpec, OutputSpec, Signature
from ferry.errors import SignatureError
from ferry.serving.inputs import feeds_from_records, feeds_from_tensors, measure_quality

SIGNATURE = Signature(
    inputs=[
        InputSpec(name="product", dtype="string", kind="categorical", categories=["books"]),
        InputSpec(name="review", dtype="string", kind="text", nullable=True),
    ],
    outputs=[OutputSpec(name="label", dtype="int64", shape=[-1])],
)


def tensors(review: dict[str, Any]) -> list[dict[str, Any]]:
    product = {"name": "product", "datatype": "BYTES", "shape": [3], "data": ["books"] * 3}
    return [product, {"name": "review", "shape": [3], **review}]


def test_text_tensor_is_passed_as_sent() -> None:
    data = ["Not GOOD, café 😀", "", None]
    feeds, rows = feeds_from_tensors(SIGNATURE, tensors({"datatype": "BYTES", "data": data}))
    assert rows == 3
    assert feeds["review"].dtype == object and feeds["review"].shape == (3, 1)
    # Unlike a category, empty and null text are the empty document, not "__missing__".
    assert feeds["review"].ravel().tolist() == ["Not GOOD, café 😀", "", ""]


def test_records_give_the_same_text_feeds() -> None:
    records = [{"product": "books", "review": r} for r in ["Not GOOD, café 😀", "", None]]
    feeds, _ = feeds_from_records(SIGNATURE, records)
    assert feeds["review"].ravel().tolist() == ["Not GOOD, café 😀", "", ""]


@pytest.mark.parametrize(
    ("review", "needle"),
    [
        (
            {"datatype": "FP32", "data": [1.0, 2.0, 3.0]},
            "input 'review' is text: send datatype BYTES",
        ),
        (
            {"datatype": "BYTES", "data": ["ok", 5, "ok"]},
            "input 'review': row 1 holds 5, which is not text",
        ),
        ({"datatype": "BYTES", "data": ["ok", True, "ok"]}, "row 1 holds True"),
    ],
)
def test_a_number_where_text_is_expected_is_refused(review: dict[str, Any], needle: str) -> None:
    with pytest.raises(SignatureError, match=needle):
        feeds_from_tensors(SIGNATURE, tensors(review))


def test_a_missing_text_input_is_named() -> None:
    with pytest.raises(SignatureError, match=r"missing \['review'\]"):
        feeds_from_tensors(SIGNATURE, tensors({"datatype": "BYTES", "data": ["a"] * 3})[:1])
    with pytest.raises(SignatureError, match=r"instance 1 is missing 'review'.*send a string"):
        feeds_from_records(SIGNATURE, [{"review": "fine"}, {"product": "books"}])


@pytest.mark.parametrize("value", [5, 2.5, False, ["a"], {"a": 1}])
def test_records_refuse_non_strings_for_text(value: object) -> None:
    with pytest.raises(SignatureError, match=r"input 'review': row 0 holds .*not text"):
        feeds_from_records(SIGNATURE, [{"product": "books", "review": value}])


def test_quality_counts_empty_text_as_missing_and_nothing_as_unseen() -> None:
    feeds = {
        "product": np.asarray([["books"], ["toys"]], dtype=object),
        "review": np.asarray([["never seen words"], [""]], dtype=object),
    }
    quality = measure_quality(SIGNATURE, feeds)
    assert quality.missing["review"] == 1 and "review" not in quality.unseen
    assert quality.unseen["product"] == 1
