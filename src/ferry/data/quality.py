"""Data quality checks run before training: what is missing, repeated, constant or leaking."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from ferry.data.leak import Leak, find_leaks
from ferry.data.schema import FEATURE_KINDS, ColumnInfo, ColumnKind, Task, infer_task
from ferry.errors import DataError

Severity = Literal["info", "warning", "error"]

IMBALANCE_SHARE = 0.10  # a minority class below this share of rows gets a warning
MISSING_WARNING_RATE = 0.5  # above this, a column's missing values are a warning, not info


@dataclass
class QualityIssue:
    check: str  # missing, constant, duplicate_column, duplicate_rows, id_column, leak, ...
    column: str | None
    count: int  # how many cells, rows or values the issue is about
    detail: str
    severity: Severity


@dataclass
class QualityReport:
    rows: int
    columns: int
    issues: list[QualityIssue]
    class_balance: dict[str, int] | None  # label -> rows, largest first; None for regression

    def errors(self) -> list[QualityIssue]:
        return [issue for issue in self.issues if issue.severity == "error"]

    def warnings(self) -> list[QualityIssue]:
        return [issue for issue in self.issues if issue.severity == "warning"]

    def by_check(self, check: str) -> list[QualityIssue]:
        return [issue for issue in self.issues if issue.check == check]


def check_quality(
    frame: pd.DataFrame, target: str | None, schema: list[ColumnInfo], task: str | None = None
) -> QualityReport:
    """Every check on ``frame``; ``task`` is inferred from the target when not given."""
    issues = [
        *_missing(schema, len(frame), target),
        *_constant(frame, schema, target),
        *_duplicate_columns(frame, schema),
        *_duplicate_rows(frame, schema),
        *_id_columns(schema),
    ]
    class_balance = None
    if target is not None and target not in frame.columns:
        issues.append(_target_absent(frame, target))
    elif target is not None:
        resolved = _resolve_task(task, schema, target)
        issues += _leaks(frame, target, schema, resolved)
        if resolved == "classification":
            class_balance = _class_balance(frame[target])
            issues += _balance_issues(class_balance, target)
    return QualityReport(len(frame), len(frame.columns), issues, class_balance)


def _resolve_task(task: str | None, schema: list[ColumnInfo], target: str) -> Task:
    if task is None:
        return infer_task(schema, target)
    if task == "classification":
        return "classification"
    if task == "regression":
        return "regression"
    raise DataError(
        f"task must be 'classification', 'regression' or None (inferred from the target); "
        f"received {task!r}. Fix task in ferry.yaml."
    )


def _missing(schema: list[ColumnInfo], rows: int, target: str | None) -> Iterable[QualityIssue]:
    for info in schema:
        if info.missing == 0:
            continue
        rate = info.missing / max(rows, 1)
        detail = f"{info.missing} of {rows} rows missing ({rate:.1%})"
        if info.name == target:
            yield QualityIssue(
                "missing", info.name, info.missing,
                f"{detail} in the target: expected a label on every row. Drop the unlabelled "
                "rows or fill in their labels.",
                "error",
            )  # fmt: skip
            continue
        severity: Severity = "warning" if rate > MISSING_WARNING_RATE else "info"
        yield QualityIssue("missing", info.name, info.missing, detail, severity)


def _constant(
    frame: pd.DataFrame, schema: list[ColumnInfo], target: str | None
) -> Iterable[QualityIssue]:
    for info in schema:
        if info.unique > 1 or info.name not in frame.columns:
            continue
        values = frame[info.name].dropna()
        # tolist() gives a plain Python value, so the message shows 5 rather than np.int64(5).
        shown = f"only value {values.iloc[:1].tolist()[0]!r}" if len(values) else "all missing"
        if info.name == target:
            detail = f"the target has {shown}: nothing to learn. Expected at least two values."
            yield QualityIssue("constant", info.name, len(frame), detail, "error")
        else:
            detail = f"{shown}; it carries no information. Add it to data.drop."
            yield QualityIssue("constant", info.name, len(frame), detail, "warning")


def _duplicate_columns(frame: pd.DataFrame, schema: list[ColumnInfo]) -> Iterable[QualityIssue]:
    # Constant columns are reported once as constant, not again as copies of each other.
    constant = {info.name for info in schema if info.unique <= 1}
    first_by_hash: dict[bytes, list[str]] = {}
    for position, name in enumerate(frame.columns):
        if name in constant:
            continue
        column = frame.iloc[:, position]
        key = pd.util.hash_pandas_object(column, index=False).to_numpy().tobytes()
        earlier = first_by_hash.setdefault(key, [])
        # The hash groups candidates; equals() confirms, so a collision cannot raise a false alarm.
        original = next((e for e in earlier if frame[e].equals(column)), None)
        if original is None:
            earlier.append(str(name))
            continue
        detail = f"identical to column {original!r}. Add one of them to data.drop."
        yield QualityIssue("duplicate_column", str(name), len(frame), detail, "warning")


def _duplicate_rows(frame: pd.DataFrame, schema: list[ColumnInfo]) -> Iterable[QualityIssue]:
    ids = [info.name for info in schema if info.kind == "id"]
    # A copied record usually gets a fresh id, so ids are left out of the comparison.
    subset = [name for name in frame.columns if name not in ids]
    if not subset or frame.empty:
        return
    repeated = int(frame.duplicated(subset=subset).sum())
    if repeated:
        ignoring = f" (ignoring id columns {ids})" if ids else ""
        detail = (
            f"{repeated} rows ({repeated / len(frame):.2%}) repeat an earlier row{ignoring}. "
            "Remove duplicates unless they are real repeated events."
        )
        yield QualityIssue("duplicate_rows", None, repeated, detail, "warning")


def _id_columns(schema: list[ColumnInfo]) -> Iterable[QualityIssue]:
    for info in schema:
        if info.kind == "id":
            detail = f"looks like an identifier ({info.unique} distinct values); not a feature"
            yield QualityIssue("id_column", info.name, info.unique, detail, "info")


def _target_absent(frame: pd.DataFrame, target: str) -> QualityIssue:
    detail = (
        f"target {target!r} is not a column of the data: expected one of "
        f"{[str(name) for name in frame.columns]}. Fix data.target."
    )
    return QualityIssue("target_missing", target, 0, detail, "error")


def _leaks(
    frame: pd.DataFrame, target: str, schema: list[ColumnInfo], task: Task
) -> list[QualityIssue]:
    candidates: dict[str, ColumnKind] = {
        info.name: info.kind
        for info in schema
        if info.name != target and info.kind in FEATURE_KINDS and info.name in frame.columns
    }
    return [_leak_issue(leak, target) for leak in find_leaks(frame, target, candidates, task)]


def _leak_issue(leak: Leak, target: str) -> QualityIssue:
    detail = (
        f"this column alone predicts {target!r} with {leak.metric} {leak.score:.3f} "
        f"(leak threshold {leak.threshold}, {leak.rows} rows checked): it probably encodes the "
        "label, e.g. it is recorded after the outcome. Add it to data.drop unless its value is "
        "really known when the prediction is made."
    )
    return QualityIssue("leak", leak.column, leak.rows, detail, "error")


def _class_balance(labels: pd.Series) -> dict[str, int]:
    counts = labels.value_counts(dropna=True)
    return {str(label): int(count) for label, count in counts.items()}


def _balance_issues(balance: dict[str, int], target: str) -> list[QualityIssue]:
    if len(balance) < 2:
        return []  # a single class is already reported as a constant target
    total = sum(balance.values())
    (majority, most), (minority, fewest) = next(iter(balance.items())), list(balance.items())[-1]
    share = fewest / total
    if share >= IMBALANCE_SHARE:
        return []
    detail = (
        f"minority class {minority!r} of {target!r} is {share:.1%} of rows ({fewest} of {total}); "
        f"ratio {most / fewest:.0f}:1 against {majority!r}. Keep search.class_weight: balanced "
        "and judge models by roc_auc or pr_auc rather than accuracy."
    )
    return [QualityIssue("class_imbalance", target, fewest, detail, "warning")]
