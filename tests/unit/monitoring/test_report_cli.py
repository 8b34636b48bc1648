"""The report command's argument handling: --since periods, labels files, version choice."""

from collections import Counter
from pathlib import Path

import pytest
import typer

from ferry.cli.monitor_report import _choose_version, parse_since, read_labels
from ferry.errors import DataError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("2w", 1209600), (" 1.5H ", 5400)],
)
def test_since_takes_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["24", "h", "0h", "-3h", "3x", "1h30m", "yesterday", ""])
def test_since_refuses_anything_else_with_an_example(text: str) -> None:
    with pytest.raises(typer.BadParameter, match=r"is not a period: .* e\.g\. 90s, 30m, 24h"):
        parse_since(text)


def test_labels_are_read_by_id(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("label,id,note\nyes,req1/0,x\nno,req1/1,\n,req2,\nyes,,skipped\n")
    assert read_labels(path) == {"req1/0": "yes", "req1/1": "no", "req2": ""}


def test_labels_need_id_and_label_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("row,truth\n1,yes\n")
    with pytest.raises(DataError, match=r"has columns \['row', 'truth'\]: expected 'id'"):
        read_labels(path)
    with pytest.raises(DataError, match="does not exist"):
        read_labels(tmp_path / "nope.csv")


def test_the_newest_logged_version_is_chosen_unless_one_is_asked() -> None:
    seen = Counter({1: 10, 3: 5})
    assert _choose_version(seen, "fraud", "24h", None) == 3
    assert _choose_version(seen, "fraud", "24h", 1) == 1
    with pytest.raises(DataError, match=r"fraud:2 in the last 24h; .* 1 \(10 rows\), 3 \(5 rows\)"):
        _choose_version(seen, "fraud", "24h", 2)
    with pytest.raises(DataError, match="no logged predictions of 'fraud' in the last 7d"):
        _choose_version(Counter(), "fraud", "7d", None)
