import numpy as np
import pytest

from ferry.core.signature import (
    MISSING_CATEGORY,
    InputSpec,
    OutputSpec,
    Signature,
    validate_columns,
)
from ferry.errors import SignatureError

SIG = Signature(
    inputs=[
        InputSpec(name="amount", dtype="float32"),
        InputSpec(name="age", dtype="float32", nullable=True),
        InputSpec(name="merchant", dtype="string", kind="categorical", categories=["a"]),
    ],
    outputs=[OutputSpec(name="label", dtype="int64", shape=[-1])],
)


def test_valid_batch_is_typed() -> None:
    out = validate_columns(SIG, {"amount": [1, 2], "age": [None, 3.0], "merchant": ["a", None]})
    assert out["amount"].dtype == np.float32 and out["amount"].shape == (2, 1)
    assert np.isnan(out["age"][0, 0])
    assert out["merchant"][1, 0] == MISSING_CATEGORY


def test_missing_and_unknown_inputs() -> None:
    with pytest.raises(SignatureError, match=r"missing input\(s\) \['merchant'\]"):
        validate_columns(SIG, {"amount": [1], "age": [1]})
    with pytest.raises(SignatureError, match=r"unknown input\(s\) \['extra'\]"):
        validate_columns(SIG, {"amount": [1], "age": [1], "merchant": ["a"], "extra": [1]})


def test_non_numeric_and_nan_where_not_nullable() -> None:
    with pytest.raises(SignatureError, match="input 'amount': expected float32 values"):
        validate_columns(SIG, {"amount": ["abc"], "age": [1], "merchant": ["a"]})
    with pytest.raises(SignatureError, match="'amount' is not nullable"):
        validate_columns(SIG, {"amount": [float("nan")], "age": [1], "merchant": ["a"]})


def test_row_count_mismatch() -> None:
    with pytest.raises(SignatureError, match="has 1 rows but earlier inputs have 2"):
        validate_columns(SIG, {"amount": [1, 2], "age": [1], "merchant": ["a", "a"]})
