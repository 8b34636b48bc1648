"""What kind each column is, and which columns a model may use as features."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
from pandas.api import types

from ferry.core.signature import MISSING_CATEGORY
from ferry.errors import DataError

ColumnKind = Literal["numeric", "categorical", "boolean", "datetime", "text", "id"]
Task = Literal["classification", "regression"]
FEATURE_KINDS: tuple[ColumnKind, ...] = ("numeric", "categorical", "boolean", "datetime")

UNIQUE_RATIO = 0.95  # at least this share of distinct values makes a column id-like
MIN_ID_ROWS = 50  # below this, every small column looks unique
DATETIME_SHARE = 0.95  # share of sampled strings that must parse as dates
TEXT_MEAN_CHARS = 30
TEXT_MEAN_WORDS = 4
SAMPLE_SIZE = 1_000
MAX_CLASSES = 20  # an integer target with at most this many values holds class labels

_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})
_ID_NAME = re.compile(
    r"(?:^|[_\s.-])(?:id|uuid|guid|key|no|nr|num|number)$|^(?:id|uuid|guid)(?:[_\s.-]|$)"
)
_CAMEL_ID = re.compile(r"[a-z0-9](Id|ID)$")
# A four-digit year next to a month, or a month name next to a day: 2024-01-31, 31/01/2024, Jan 5
_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_DATE_LIKE = re.compile(
    rf"\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}|\d{{1,2}}[-/.]\d{{1,2}}[-/.]\d{{4}}"
    rf"|\b(?:{_MONTHS})[a-z]*\.?\s+\d{{1,2}}\b|\b\d{{1,2}}\s+(?:{_MONTHS})",
    re.IGNORECASE,
)


@dataclass
class ColumnInfo:
    name: str
    kind: ColumnKind
    dtype: str
    missing: int
    unique: int


def infer_schema(frame: pd.DataFrame, target: str | None = None) -> list[ColumnInfo]:
    """One ``ColumnInfo`` per column, in frame order; the target is included with its kind.

    The target is never called an id or text: a label column is the thing to predict.
    """
    schema = []
    for position, name in enumerate(frame.columns):
        column = frame.iloc[:, position]
        unique = int(column.nunique(dropna=True))
        kind = _kind_of(column, str(name), unique, is_target=name == target)
        schema.append(ColumnInfo(str(name), kind, str(column.dtype), missing_count(column), unique))
    return schema


def missing_count(column: pd.Series) -> int:
    """Missing cells, counting the serving placeholder for a missing category as missing."""
    missing = int(column.isna().sum())
    if types.is_object_dtype(column) or types.is_string_dtype(column):
        missing += int((column == MISSING_CATEGORY).sum())
    return missing


def feature_columns(
    schema: list[ColumnInfo],
    target: str | None,
    drop: Iterable[str] = (),
    sensitive: Iterable[str] = (),
    text: bool | Sequence[str] = False,
) -> dict[ColumnKind, list[str]]:
    """Usable feature columns per kind: numeric, categorical, boolean and datetime.

    The target, dropped and sensitive columns are left out, and so are id columns. Text columns
    are left out too unless ``text`` asks for them (``features.text``): True takes every column
    inferred as text, a list takes exactly those columns as text whatever their inferred kind.
    """
    excluded = {*drop, *sensitive}
    named = [] if isinstance(text, bool) else list(text)
    _check_known(schema, excluded | set(named) | ({target} if target is not None else set()))
    if target is not None:
        excluded.add(target)
    _check_text_columns(named, excluded)
    features: dict[ColumnKind, list[str]] = {kind: [] for kind in FEATURE_KINDS}
    if text is not False:
        features["text"] = []
    for info in schema:
        kind = _feature_kind(info, named)
        if info.name not in excluded and kind in features:
            features[kind].append(info.name)
    if text is True and not features["text"]:
        raise DataError(
            "features.text is set but no column looks like free text (on average over "
            f"{TEXT_MEAN_CHARS} characters and {TEXT_MEAN_WORDS} words); name the text columns "
            "in features.text.columns, or remove features.text"
        )
    return features


def _feature_kind(info: ColumnInfo, named: list[str]) -> ColumnKind | None:
    """Named text columns are text whatever was inferred; once named, other text is left out."""
    if not named:
        return info.kind
    if info.name in named:
        return "text"
    return None if info.kind == "text" else info.kind


def _check_text_columns(named: list[str], excluded: set[str]) -> None:
    clash = [name for name in named if name in excluded]
    if clash:
        raise DataError(
            f"features.text.columns {clash} are also the target, dropped or sensitive; "
            "remove them from one of the lists"
        )


def _check_known(schema: list[ColumnInfo], names: set[str]) -> None:
    known = [info.name for info in schema]
    unknown = sorted(names - set(known))
    if unknown:
        raise DataError(
            f"columns {unknown} are not in the data: expected names from {known}. "
            "Fix the spelling in data.target, data.drop or data.sensitive."
        )


def _kind_of(column: pd.Series, name: str, unique: int, *, is_target: bool) -> ColumnKind:
    if types.is_datetime64_any_dtype(column):
        return "datetime"
    if types.is_bool_dtype(column) or _is_boolean(column, unique):
        return "boolean"
    if types.is_numeric_dtype(column) or types.is_timedelta64_dtype(column):
        return _numeric_kind(column, name, unique, is_target=is_target)
    return _string_kind(column, unique, is_target=is_target)


def _is_boolean(column: pd.Series, unique: int) -> bool:
    if unique != 2:
        return False
    truths = {_truth(value) for value in column.dropna().unique()}
    return truths == {True, False}


def _truth(value: object) -> bool | None:
    """True or False for a yes/no-like value, None for anything else."""
    if isinstance(value, str):
        text = value.strip().lower()
    elif types.is_number(value):
        text = "1" if value == 1 else "0" if value == 0 else ""
    else:
        return None
    return True if text in _TRUE else False if text in _FALSE else None


def _numeric_kind(column: pd.Series, name: str, unique: int, *, is_target: bool) -> ColumnKind:
    if is_target or not types.is_integer_dtype(column) or not _mostly_unique(column, unique):
        return "numeric"
    return "id" if _id_name(name) or _fills_range(column, unique) else "numeric"


def _mostly_unique(column: pd.Series, unique: int) -> bool:
    return len(column) > MIN_ID_ROWS and unique >= UNIQUE_RATIO * len(column)


def _id_name(name: str) -> bool:
    return bool(_ID_NAME.search(name.lower()) or _CAMEL_ID.search(name))


def _fills_range(column: pd.Series, unique: int) -> bool:
    """Distinct integers that nearly fill their range, as a sequence of row numbers does."""
    span = int(column.max()) - int(column.min()) + 1
    return span <= unique / UNIQUE_RATIO


def _string_kind(column: pd.Series, unique: int, *, is_target: bool) -> ColumnKind:
    sample = _sample_strings(column)
    if sample.empty:
        return "categorical"
    if _looks_datetime(sample):
        return "datetime"
    if is_target:
        return "categorical"
    if _looks_text(sample):
        return "text"
    return "id" if _mostly_unique(column, unique) else "categorical"


def _sample_strings(column: pd.Series) -> pd.Series:
    values = column.dropna()
    if len(values) > SAMPLE_SIZE:
        values = values.sample(n=SAMPLE_SIZE, random_state=0)
    return values.astype(str)


def _looks_datetime(sample: pd.Series) -> bool:
    # The pattern check comes first: dateutil happily reads "3" or "1.2.3" as dates.
    if sample.str.contains(_DATE_LIKE).mean() < DATETIME_SHARE:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = pd.to_datetime(sample, format="mixed", errors="coerce", utc=True)
        except (ValueError, TypeError, OverflowError):
            return False
    return bool(parsed.notna().mean() >= DATETIME_SHARE)


def _looks_text(sample: pd.Series) -> bool:
    mean_chars = sample.str.len().mean()
    mean_words = sample.str.split().str.len().mean()
    return bool(mean_chars > TEXT_MEAN_CHARS and mean_words >= TEXT_MEAN_WORDS)


def infer_task(schema: list[ColumnInfo], target: str) -> Task:
    """Classification for labels (booleans, strings, small sets of integers), else regression."""
    info = next((info for info in schema if info.name == target), None)
    if info is None:
        raise DataError(
            f"target {target!r} is not a column: expected one of {[i.name for i in schema]}. "
            "Fix data.target."
        )
    if info.kind != "numeric":
        return "classification"
    is_integer = info.dtype.lower().startswith(("int", "uint"))
    return "classification" if is_integer and info.unique <= MAX_CLASSES else "regression"
