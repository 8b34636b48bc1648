from __future__ import annotations

import numpy as np
import pytest
from pandas.api import types

from ferry.data.builtin import BUILTIN_NAMES, load_builtin
from ferry.errors import DataError

TARGETS = {"fraud": "is_fraud"}


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_builtin_loads_with_its_target(name: str) -> None:
    frame = load_builtin(name, rows=150)
    target = TARGETS.get(name, "target")
    assert target in frame.columns
    assert len(frame) == 150
    assert frame.columns.is_unique
    assert all(" " not in str(column) for column in frame.columns)


@pytest.mark.parametrize(("name", "classes"), [("breast_cancer", 2), ("wine", 3), ("digits", 10)])
def test_classification_sets_have_integer_class_codes(name: str, classes: int) -> None:
    target = load_builtin(name)["target"]
    assert target.dtype == np.dtype(np.int64)
    assert target.nunique() == classes


def test_digits_has_64_named_pixels() -> None:
    frame = load_builtin("digits")
    assert list(frame.columns) == [f"pixel_{i}" for i in range(64)] + ["target"]
    assert len(frame) == 1797


def test_diabetes_has_a_float_target() -> None:
    assert types.is_float_dtype(load_builtin("diabetes")["target"])


def test_rows_beyond_the_set_size_return_every_row() -> None:
    assert len(load_builtin("wine", rows=10_000)) == 178


def test_sampled_rows_depend_on_the_seed() -> None:
    first, again = load_builtin("wine", rows=50, seed=1), load_builtin("wine", rows=50, seed=1)
    assert first.equals(again)
    assert not first.equals(load_builtin("wine", rows=50, seed=2))


def test_fraud_rows_default_to_20000() -> None:
    assert len(load_builtin("fraud")) == 20_000


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(DataError, match="unknown built-in dataset 'iris'") as info:
        load_builtin("iris")
    assert all(name in str(info.value) for name in BUILTIN_NAMES)
