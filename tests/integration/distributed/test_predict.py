"""`ferry predict` without Dask: files in, scored files out, equal to what the server answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ferry.cli.app import _register_groups, app
from ferry.core.bundle import read_manifest
from ferry.distributed.batch import score_file
from ferry.errors import DataError, SignatureError

# ORT's tree and linear kernels may sum in another order with another thread count.
PROBA_TOLERANCE = 1e-6


class Advances:
    def __init__(self) -> None:
        self.total: int | None = None
        self.steps: list[int] = []

    def start(self, total_rows: int | None) -> None:
        self.total = total_rows

    def advance(self, rows: int) -> None:
        self.steps.append(rows)


def _assert_matches_server(scored: pd.DataFrame, expected: dict[str, np.ndarray]) -> None:
    assert scored["prediction"].astype(str).tolist() == [str(v) for v in expected["prediction"]]
    proba = expected["probabilities"]
    for i in range(proba.shape[1]):
        got = scored[f"probability_{i}"].to_numpy()
        np.testing.assert_allclose(got, proba[:, i], atol=PROBA_TOLERANCE)


def test_parquet_round_trip_matches_the_server_chunk_by_chunk(
    tmp_path: Path, fraud_bundle: Path, fraud_rows: pd.DataFrame, reference
) -> None:
    source, output = tmp_path / "in.parquet", tmp_path / "scored.parquet"
    fraud_rows.to_parquet(source, row_group_size=2000)
    seen = Advances()
    report = score_file(fraud_bundle, source, output, chunk_rows=1000, observer=seen)
    assert report.rows == len(fraud_rows) and report.chunks == 5
    # Bounded memory: the file was read, scored and written one chunk at a time.
    assert seen.total == len(fraud_rows) and seen.steps == [1000] * 5
    assert pq.ParquetFile(output).metadata.num_row_groups == 5
    scored = pd.read_parquet(output)
    labels = read_manifest(fraud_bundle).labels
    assert list(scored.columns) == [
        *fraud_rows.columns,
        "prediction",
        *(f"probability_{label}" for label in labels or []),
    ]
    # Repeated text comes back as dictionary (category) columns with the same values; every
    # other column keeps its type.
    assert isinstance(scored["country"].dtype, pd.CategoricalDtype)
    restored = scored[fraud_rows.columns].astype(fraud_rows.dtypes.to_dict())
    pd.testing.assert_frame_equal(restored, fraud_rows)
    categorical = {c for c in scored.columns if isinstance(scored[c].dtype, pd.CategoricalDtype)}
    assert categorical == {
        "merchant_category",
        "country",
        "device",
        "customer_segment",
        "prediction",
    }
    _assert_matches_server(scored, reference(fraud_bundle, fraud_rows))
    assert not list(tmp_path.glob(".*partial*"))


def test_csv_round_trip_keeps_only_the_asked_columns(
    tmp_path: Path, fraud_bundle: Path, fraud_rows: pd.DataFrame, reference
) -> None:
    source, output = tmp_path / "in.csv", tmp_path / "scored.csv"
    fraud_rows.to_csv(source, index=False)
    report = score_file(fraud_bundle, source, output, chunk_rows=700, keep=["transaction_id"])
    assert report.rows == len(fraud_rows) and report.chunks >= 2
    scored = pd.read_csv(output)
    assert list(scored.columns)[:2] == ["transaction_id", "prediction"]
    assert scored["transaction_id"].tolist() == fraud_rows["transaction_id"].tolist()
    _assert_matches_server(scored, reference(fraud_bundle, fraud_rows))


def test_regression_parquet_to_csv(
    tmp_path: Path, diabetes_bundle: Path, diabetes_rows: pd.DataFrame, reference
) -> None:
    source, output = tmp_path / "in.pq", tmp_path / "scored.csv.gz"
    diabetes_rows.to_parquet(source)
    score_file(diabetes_bundle, source, output, chunk_rows=100, keep=[])
    scored = pd.read_csv(output)
    assert list(scored.columns) == ["prediction"]
    expected = reference(diabetes_bundle, diabetes_rows)["prediction"]
    np.testing.assert_allclose(scored["prediction"].to_numpy(), expected, rtol=1e-6)


def test_missing_columns_are_named_with_the_fix(
    tmp_path: Path, fraud_bundle: Path, fraud_rows: pd.DataFrame
) -> None:
    source = tmp_path / "in.parquet"
    fraud_rows.drop(columns=["amount", "device"]).to_parquet(source)
    with pytest.raises(SignatureError, match=r"lacks column\(s\) \['amount', 'device'\].*add"):
        score_file(fraud_bundle, source, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_files_that_are_not_parquet_or_csv_are_refused(tmp_path: Path, fraud_bundle: Path) -> None:
    fake = tmp_path / "data.parquet"
    fake.write_text("transaction_id,amount\ntx_1,3.5\n")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        score_file(fraud_bundle, fake, tmp_path / "out.parquet")
    with pytest.raises(DataError, match=r"expected a name ending in \.parquet"):
        score_file(fraud_bundle, tmp_path / "data.json", tmp_path / "out.parquet")
    with pytest.raises(DataError, match=r"output file.*expected a name ending"):
        score_file(fraud_bundle, fake, tmp_path / "out.txt")
    with pytest.raises(DataError, match="is the input file"):
        score_file(fraud_bundle, fake, fake)


def test_bad_values_fail_with_the_row_and_leave_no_output(
    tmp_path: Path, fraud_bundle: Path, fraud_rows: pd.DataFrame
) -> None:
    rows = fraud_rows.copy()
    rows["amount"] = rows["amount"].astype(object)
    rows.loc[2345, "amount"] = "lots"
    source, output = tmp_path / "in.csv", tmp_path / "out.parquet"
    rows.to_csv(source, index=False)
    with pytest.raises(DataError, match="numeric model inputs must hold numbers"):
        score_file(fraud_bundle, source, output, chunk_rows=1000)
    rows.loc[2345, "amount"] = None
    rows.to_csv(source, index=False)
    with pytest.raises(SignatureError, match=r"'amount' is empty .* at data row 2346"):
        score_file(fraud_bundle, source, output, chunk_rows=1000)
    assert not output.exists() and not list(tmp_path.glob(".*partial*"))


def test_outputs_may_not_overwrite_input_columns(
    tmp_path: Path, fraud_bundle: Path, fraud_rows: pd.DataFrame
) -> None:
    source = tmp_path / "in.parquet"
    fraud_rows.assign(prediction=1).to_parquet(source)
    with pytest.raises(DataError, match=r"already has column\(s\) \['prediction'\].*--columns"):
        score_file(fraud_bundle, source, tmp_path / "out.parquet")
    scored = score_file(fraud_bundle, source, tmp_path / "out.parquet", keep=["transaction_id"])
    assert scored.rows == len(fraud_rows)


def test_cli_scores_a_bundle_directory(
    tmp_path: Path, fraud_bundle: Path, fraud_rows: pd.DataFrame
) -> None:
    source, output = tmp_path / "in.parquet", tmp_path / "scored.parquet"
    fraud_rows.to_parquet(source)
    _register_groups()
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(fraud_bundle),
            str(source),
            "-o",
            str(output),
            "--chunk-rows",
            "2000",
            "--columns",
            "transaction_id,timestamp",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "scored 5,000 rows in 3 chunk(s)" in result.output
    scored = pd.read_parquet(output)
    assert list(scored.columns)[:3] == ["transaction_id", "timestamp", "prediction"]


def test_scoring_here_needs_no_dask(
    tmp_path: Path, fraud_bundle: Path, fraud_rows: pd.DataFrame
) -> None:
    """A serving-only install has no Dask: local scoring must not import it, and --dask must
    say what to install."""
    source = tmp_path / "in.parquet"
    fraud_rows.head(100).to_parquet(source)
    script = f"""
import sys
sys.modules["dask"] = sys.modules["distributed"] = None  # as if not installed
from pathlib import Path
from ferry.distributed.batch import score_file
from ferry.errors import FerryError
bundle, source = Path({str(fraud_bundle)!r}), Path({str(source)!r})
report = score_file(bundle, source, source.with_name("out.parquet"))
assert report.rows == 100, report
try:
    score_file(bundle, source, source.with_name("out2.parquet"), dask_address="tcp://x:8786")
except FerryError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--dask needs Dask installed: pip install 'ferry-ml[dask]'" in done.stdout


def test_cli_scores_a_registry_ref(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fraud_bundle: Path, fraud_rows: pd.DataFrame
) -> None:
    from ferry.registry import open_registry
    from ferry.settings import Settings

    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))
    settings = Settings()
    settings.home.mkdir(parents=True)
    with open_registry(
        settings.resolved_registry_url(), settings.resolved_artifacts_url()
    ) as registry:
        version = registry.register("fraud", fraud_bundle, actor="test")
        registry.set_alias("fraud", "production", version.version, actor="test")
    source, output = tmp_path / "in.csv", tmp_path / "scored.parquet"
    fraud_rows.head(300).to_csv(source, index=False)
    _register_groups()
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "fraud@production", str(source), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(output)) == 300
    missing = runner.invoke(app, ["predict", str(tmp_path / "nope"), str(source), "-o", "x.csv"])
    assert missing.exit_code != 0
    assert "is not a bundle directory" in str(missing.exception)


def test_a_chunk_sliced_across_threads_scores_as_one_call(
    fraud_bundle: Path, fraud_rows: pd.DataFrame
) -> None:
    import pyarrow as pa

    from ferry.distributed.scorer import BundleScorer

    table = pa.Table.from_pandas(pd.concat([fraud_rows] * 4, ignore_index=True))
    batch = table.combine_chunks().to_batches()[0]
    one, three = BundleScorer(fraud_bundle, threads=1), BundleScorer(fraud_bundle, threads=3)
    try:
        whole, sliced = one.score(batch).to_pandas(), three.score(batch).to_pandas()
    finally:
        one.close()
        three.close()
    assert len(sliced) == 20_000
    pd.testing.assert_frame_equal(sliced, whole, check_exact=False, atol=PROBA_TOLERANCE)


def test_parquet_text_for_numbers_times_and_flags_is_parsed_as_training_read_it(
    tmp_path: Path, fraud_bundle: Path, fraud_rows: pd.DataFrame, reference
) -> None:
    """Text columns that repeat are read as Arrow dictionaries; numbers, datetimes and flags
    stored as such text still parse (days and whole amounts, so that every one repeats)."""
    typed = fraud_rows.copy()
    typed["timestamp"] = typed["timestamp"].dt.floor("D")
    typed["amount"] = typed["amount"].round()
    text = typed.copy()
    text["timestamp"] = typed["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    text["amount"] = typed["amount"].map(lambda v: f"{v:.0f}")
    text["card_present"] = typed["card_present"].map({True: "yes", False: "no"})
    source, output = tmp_path / "text.parquet", tmp_path / "scored.parquet"
    text.to_parquet(source)
    score_file(fraud_bundle, source, output, chunk_rows=2000)
    _assert_matches_server(pd.read_parquet(output), reference(fraud_bundle, typed))
