"""``ferry data inspect``: schema, quality problems with counts, class balance, tidy errors."""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Ferry, Run

ROWS = 300
REPEATED = 12
MISSING_AGE = 20


def _write_planted_csv(path: Path) -> None:
    """A labelled CSV with one leak, one constant column, missing cells and repeated rows."""
    rng = random.Random(7)
    rows = []
    for i in range(ROWS):
        amount = round(rng.gauss(0, 1), 4)
        label = int(amount + rng.gauss(0, 0.7) > 0)
        rows.append(
            {
                "amount": amount,
                "age": "" if i >= ROWS - MISSING_AGE else rng.randint(18, 90),
                "region": rng.choice(["north", "south", "east"]),
                "currency": "EUR",  # constant
                "chargeback_code": label * 10 + rng.randint(0, 1),  # recorded after the outcome
                "label": label,
            }
        )
    rows += rows[:REPEATED]  # exact copies of complete rows
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _quality_row(run: Run, check: str) -> list[str]:
    """The cells of the Quality table's row for ``check`` (first line of the row)."""
    for line in run.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 5 and cells[1] == check:
            return cells
    raise AssertionError(f"no {check!r} row in the quality table\n{run}")


def test_inspect_csv_names_the_leak_and_counts_the_problems(ferry: Ferry) -> None:
    _write_planted_csv(ferry.cwd / "loans.csv")
    run = ferry("data", "inspect", "loans.csv", "--target", "label")

    # A leak is an error-level problem: the command says so with its exit code, not a crash.
    assert run.returncode == 1, str(run)
    assert "Traceback" not in run.output
    total = ROWS + REPEATED
    assert f"loans.csv: {total} rows × 6 columns" in run.stdout

    severity, _, column, count, detail = _quality_row(run, "leak")
    assert (severity, column, count) == ("error", "chargeback_code", str(total))
    assert "alone predicts 'label'" in detail
    severity, _, column, count, _ = _quality_row(run, "constant")
    assert (severity, column, count) == ("warning", "currency", str(total))
    severity, _, column, count, detail = _quality_row(run, "duplicate_rows")
    assert (severity, count) == ("warning", str(REPEATED))
    assert f"{REPEATED} rows" in detail
    _, _, column, count, detail = _quality_row(run, "missing")
    assert (column, count) == ("age", str(MISSING_AGE))
    assert f"{MISSING_AGE} of {total} rows missing" in detail

    balance = re.search(r"^class balance: (.*)$", run.stdout, re.MULTILINE)
    assert balance is not None, str(run)
    counts = {int(k): int(v) for k, v in re.findall(r"(\d+): (\d+) \(", balance.group(1))}
    assert set(counts) == {0, 1} and sum(counts.values()) == total


def test_inspect_builtin_fraud_shows_an_imbalanced_class_balance(ferry: Ferry) -> None:
    run = ferry("data", "inspect", "builtin:fraud", "--target", "is_fraud", "--rows", "5000").ok()
    assert "builtin:fraud: 5000 rows" in run.stdout
    balance = re.search(
        r"^class balance: 0: (\d+) \((\d+\.\d)%\), 1: (\d+) \((\d+\.\d)%\)$",
        run.stdout,
        re.MULTILINE,
    )
    assert balance is not None, str(run)
    legit, fraud = int(balance.group(1)), int(balance.group(3))
    assert legit + fraud == 5000
    assert 0.01 <= fraud / 5000 <= 0.04  # "~2% fraud"
    assert float(balance.group(4)) == pytest.approx(100 * fraud / 5000, abs=0.05)
    _, _, column, count, _ = _quality_row(run, "class_imbalance")
    assert (column, count) == ("is_fraud", str(fraud))
    _, _, column, _, _ = _quality_row(run, "id_column")
    assert column == "transaction_id"


BROKEN = {
    # file name -> (content or None for absent, words the one error line must contain)
    "missing.csv": (None, ["data file not found", "'missing.csv'", "check data.source"]),
    "notes.txt": (b"a,b\n1,2\n", ["unsupported data file", "'notes.txt'", ".csv", ".parquet"]),
    "broken.parquet": (b"PAR1 this is not parquet", ["could not be parsed as Parquet"]),
    "empty.csv": (b"", ["'empty.csv'", "is empty"]),
}


def test_unusable_files_fail_with_one_clear_line_and_debug_shows_why(ferry: Ferry) -> None:
    for name, (content, _) in BROKEN.items():
        if content is not None:
            (ferry.cwd / name).write_bytes(content)
    *runs, debug = ferry.many(
        *[["data", "inspect", name, "--target", "label"] for name in BROKEN],
        ["--debug", "data", "inspect", "missing.csv"],
    )
    for (name, (_, words)), run in zip(BROKEN.items(), runs, strict=True):
        assert run.returncode == 2, str(run)
        line = run.single_error_line()
        for word in words:
            assert word in line, f"{word!r} not in the error for {name}\n{run}"
        assert run.stdout == "", str(run)

    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ferry.errors.DataError: data file not found: 'missing.csv'" in debug.stderr


def test_errors_are_one_line_at_the_default_console_width(ferry: Ferry) -> None:
    ferry.env.pop("COLUMNS")  # as in a CI log or `2> file`: no terminal, no COLUMNS
    run = ferry("data", "inspect", "a/rather/long/path/to/some/missing/file.csv")
    line = run.single_error_line()
    assert "data file not found" in line and "check data.source" in line
