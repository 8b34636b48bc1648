"""The monitoring report: drift, distributions, windows, quality and data quality from log rows."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ferry.core.bundle import BundleManifest, Metrics
from ferry.core.signature import InputSpec, OutputSpec, Signature
from ferry.core.stats import ReferenceStats, categorical_reference, numeric_reference
from ferry.errors import DataError
from ferry.monitoring import report_data
from ferry.monitoring.report import REPORT_JSON, build_monitor_report

MERCHANTS = np.array(["grocery", "fuel", "travel", "online", "pharmacy"])
SHARES = np.array([0.4, 0.25, 0.15, 0.15, 0.05])
PAYLOAD = re.compile(r"base64,[A-Za-z0-9+/=]+")
T0 = 1_700_000_000.0


def _manifest(task: str = "binary", reference: bool = True) -> BundleManifest:
    rng = np.random.default_rng(0)
    amount = rng.lognormal(3.0, 1.0, 5000)
    age = rng.normal(40, 10, 5000)
    stats = ReferenceStats(
        numeric={"amount": numeric_reference(amount), "age": numeric_reference(age)},
        categorical={
            "merchant": categorical_reference(rng.choice(MERCHANTS, 5000, p=SHARES), "__missing__")
        },
        prediction=numeric_reference(rng.beta(2, 5, 1000)),
    )
    inputs = [
        InputSpec(name="amount", dtype="float32", nullable=True, min=0.0, max=float(amount.max())),
        InputSpec(name="age", dtype="float32", min=float(age.min()), max=float(age.max())),
        InputSpec(
            name="merchant",
            dtype="string",
            kind="categorical",
            nullable=True,
            categories=MERCHANTS.tolist(),
        ),
    ]
    return BundleManifest(
        name="fraud",
        task=task,  # type: ignore[arg-type]
        signature=Signature(
            inputs=inputs,
            outputs=[OutputSpec(name="probabilities", dtype="float32", shape=[-1, 2])],
        ),
        labels=["no", "yes"],
        threshold=0.5,
        metrics=Metrics(test={"accuracy": 0.8, "f1": 0.6}),
        reference=stats if reference else None,
    )


def _rows(n: int, *, seed: int, shift: float = 1.0, start: int = 0) -> list[dict[str, Any]]:
    """Log rows as ``monitor._log_rows`` writes them; ``shift`` multiplies the amounts."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        score = float(rng.beta(2, 5))
        rows.append(
            {
                "id": f"r{start + i}",
                "time": T0 + start + i,
                "model": "fraud",
                "version": 3,
                "inputs": {
                    "amount": float(rng.lognormal(3.0, 1.0)) * shift,
                    "age": float(rng.normal(40, 10)),
                    "merchant": str(rng.choice(MERCHANTS, p=SHARES)),
                },
                "prediction": "yes" if score >= 0.5 else "no",
                "score": score,
            }
        )
    return rows


def _drifting_log() -> list[dict[str, Any]]:
    return _rows(1000, seed=1) + _rows(1000, seed=2, shift=3.0, start=1000)


def _build(tmp_path: Path, rows: list[dict[str, Any]], **kwargs: Any) -> tuple[str, dict]:
    path = build_monitor_report(rows, _manifest(), tmp_path / "out", title="fraud:3", **kwargs)
    return path.read_text(), json.loads((path.parent / REPORT_JSON).read_text())


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.refs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "src" and tag == "img":
                self.images.append(value or "")
            elif name in ("src", "href"):
                self.refs.append(value or "")


@pytest.fixture(scope="module")
def drifting(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    return _build(tmp_path_factory.mktemp("drifting"), _drifting_log(), window=500)


def test_the_drifted_feature_is_flagged_with_its_test_and_p_value(
    drifting: tuple[str, dict],
) -> None:
    text, document = drifting
    features = {f["feature"]: f for f in document["features"]}
    assert document["drifted"] == ["amount"]
    assert features["amount"]["test"] == "chi2" and features["amount"]["p_value"] < 1e-9
    assert features["amount"]["psi"] > 0.1
    assert {"age", "merchant", "__prediction__"} <= set(features)
    assert not features["age"]["drifted"] and not features["merchant"]["drifted"]
    p_values = [f["p_value"] for f in document["features"]]
    assert p_values == sorted(p_values)
    assert "drifted: amount</p>" in text
    assert re.search(r'<tr class="flag"><td>amount</td><td>chi2</td>', text)


def test_html_is_self_contained_with_one_plot_per_feature(drifting: tuple[str, dict]) -> None:
    text, _ = drifting
    parser = _Tags()
    parser.feed(text)
    # amount, age, merchant, the prediction, drift over time (no labels: no quality plot)
    assert len(parser.images) == 5
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert parser.refs == [] and not {"script", "link", "iframe"} & parser.tags
    assert "http" not in PAYLOAD.sub("", text)
    for anchor in ("drift", "distributions", "prediction", "drift-over-time", "data-quality"):
        assert f'id="{anchor}"' in text
    assert "No labels were given" in text


def test_header_names_model_versions_rows_and_period(drifting: tuple[str, dict]) -> None:
    text, document = drifting
    assert document["rows"] == 2000 and document["versions"] == {"3": 2000}
    assert document["first"] == T0 and document["last"] == T0 + 1999
    assert "<h1>fraud:3</h1>" in text and "3 (2000 rows)" in text
    assert "2023-11-14 22:13:20 UTC" in text


def test_windows_alarm_only_after_the_shift(drifting: tuple[str, dict]) -> None:
    _, document = drifting
    windows = document["windows"]
    assert [w["rows"] for w in windows] == [500] * 4
    assert [w["alarm"] for w in windows] == [False, False, False, True]
    assert [w["drifted"] for w in windows] == [False, False, True, True]
    assert windows[3]["drifted_features"] == ["amount"]
    assert windows[0]["start"] == T0 and windows[3]["end"] == T0 + 1999


def test_a_stable_log_flags_nothing(tmp_path: Path) -> None:
    _, document = _build(tmp_path, _rows(1500, seed=5), window=500)
    assert document["drifted"] == []
    assert not any(w["alarm"] for w in document["windows"])


def test_labels_give_quality_per_window(tmp_path: Path) -> None:
    rows = _rows(1200, seed=3)
    # Right for the first 600 rows, wrong after; the last 200 rows have no label.
    flip = {"yes": "no", "no": "yes"}
    labels = {
        r["id"]: r["prediction"] if i < 600 else flip[r["prediction"]]
        for i, r in enumerate(rows[:1000])
    }
    labels["not-logged"] = "yes"
    text, document = _build(tmp_path, rows, labels=labels, window=300)
    quality = document["quality"]
    assert [int(w["metrics"]["n"]) for w in quality] == [300, 300, 300, 100]
    assert [w["metrics"]["accuracy"] for w in quality] == [1.0, 1.0, 0.0, 0.0]
    assert document["labels_given"] == 1001
    assert "1001 labels given, 1000 matched" in text
    assert text.count("data:image/png;base64,") == 6  # the quality plot joins the five


def test_regression_labels_must_be_numbers(tmp_path: Path) -> None:
    rows = _rows(20, seed=4)
    for row in rows:
        row["prediction"] = 1.5
    manifest = _manifest("regression")
    with pytest.raises(DataError, match="'abc' is not a number"):
        build_monitor_report(rows, manifest, tmp_path, title="t", labels={"r0": "abc"})
    path = build_monitor_report(rows, manifest, tmp_path, title="t", labels={"r0": "2.5"})
    quality = json.loads((path.parent / REPORT_JSON).read_text())["quality"]
    assert quality[0]["metrics"]["rmse"] == pytest.approx(1.0)


def test_data_quality_counts_missing_out_of_range_and_unseen(tmp_path: Path) -> None:
    rows = _rows(300, seed=6)
    for row in rows[:7]:
        row["inputs"]["amount"] = None
    for row in rows[10:13]:
        row["inputs"]["age"] = 999.0
    for row in rows[20:25]:
        row["inputs"]["merchant"] = "casino"
    rows[30]["inputs"]["merchant"] = "__missing__"
    del rows[31]["inputs"]["merchant"]  # an input the row lacks is missing too
    text, document = _build(tmp_path, rows)
    counts = document["data_quality"]
    assert counts["amount"] == {"missing": 7, "out_of_range": 0, "unseen": 0}
    assert counts["age"] == {"missing": 0, "out_of_range": 3, "unseen": 0}
    assert counts["merchant"] == {"missing": 2, "out_of_range": 0, "unseen": 5}
    assert '<tr class="flag"><td>merchant</td>' in text


def test_an_empty_log_says_how_to_get_predictions(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no logged predictions of 'fraud' in the period") as info:
        build_monitor_report(iter([]), _manifest(), tmp_path / "out", title="t")
    assert "ferry serve" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_bundle_without_reference_still_reports_data_quality(tmp_path: Path) -> None:
    path = build_monitor_report(_rows(50, seed=7), _manifest(reference=False), tmp_path, title="t")
    text = path.read_text()
    assert "holds no reference statistics" in text
    assert json.loads((tmp_path / REPORT_JSON).read_text())["features"] == []
    assert 'id="data-quality"' in text


def test_rows_are_read_in_chunks_and_sorted_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_data, "CHUNK_ROWS", 7)
    rows = _rows(30, seed=8)[::-1]
    specs = report_data.tabular_inputs(_manifest().signature)
    columns = report_data.read_columns(iter(rows), specs)
    assert len(columns) == 30
    assert columns.ids.tolist() == [f"r{i}" for i in range(30)]
    assert columns.inputs["amount"][0] == pytest.approx(rows[-1]["inputs"]["amount"])
    assert columns.inputs["merchant"].dtype == object


def test_multiclass_predictions_are_compared_as_class_indices() -> None:
    manifest = _manifest("multiclass").model_copy(update={"labels": ["a", "b", "c"]})
    rows = _rows(4, seed=9)
    for row, label in zip(rows, ["c", "a", "b", "zzz"], strict=True):
        row["prediction"] = label
    columns = report_data.read_columns(rows, report_data.tabular_inputs(manifest.signature))
    assert report_data.prediction_column(manifest, columns).tolist() == [
        "2",
        "0",
        "1",
        "__missing__",
    ]
