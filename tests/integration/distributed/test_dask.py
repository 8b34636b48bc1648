"""Dask: batch scoring and search trials on a LocalCluster of two workers.

The workers are threads of this process (``processes=False``: process workers take seconds to
start); that they really did the work is proven by the worker address every chunk and every
trial records, not assumed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from ferry.cli.app import _register_groups, app
from ferry.core.spec import Spec, parse_spec
from ferry.distributed import cluster
from ferry.distributed.batch import score_file
from ferry.distributed.search import DaskSearch
from ferry.errors import FerryError
from ferry.lab import Prepared, encode_target, prepare
from ferry.training.features import model_frame
from ferry.training.search import Search, SearchResult

distributed = pytest.importorskip("distributed")
# The scheduler serves HTTP (metrics) even without a dashboard: on loopback, on a free port.
LOOPBACK_HTTP = "127.0.0.1:0"

SEARCH_SPEC: dict[str, Any] = {
    "name": "bc",
    "task": "classification",
    "data": {"source": "builtin:breast_cancer", "target": "target"},
    # An ample budget: trials are never cut, so the trial count alone ends the search.
    "search": {"families": ["logistic", "hist_gb"], "trials": 9, "time_budget_s": 600, "folds": 2},
}


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=LOOPBACK_HTTP
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(dask_cluster: Any) -> Iterator[Any]:
    with distributed.Client(dask_cluster) as connected:
        yield connected


@pytest.fixture(scope="module")
def workers(client: Any) -> set[str]:
    return set(client.nthreads())


def test_batch_scoring_on_workers_matches_local(
    tmp_path: Path, fraud_bundle: Path, fraud_rows: pd.DataFrame, dask_cluster: Any, workers: set
) -> None:
    source = tmp_path / "in.parquet"
    fraud_rows.to_parquet(source)
    here = score_file(fraud_bundle, source, tmp_path / "here.parquet", chunk_rows=600)
    there = score_file(
        fraud_bundle,
        source,
        tmp_path / "there.parquet",
        chunk_rows=600,
        dask_address=dask_cluster.scheduler_address,
    )
    assert there.rows == here.rows == len(fraud_rows) and there.chunks == here.chunks == 9
    assert set(there.workers) <= workers and sum(there.workers.values()) == 9
    # Each worker process loads a bundle once, however many chunks it scores.
    assert cluster.LOADS[cluster.BundleFiles.read(fraud_bundle).key] == 1
    local = pd.read_parquet(tmp_path / "here.parquet")
    remote = pd.read_parquet(tmp_path / "there.parquet")
    proba = ["probability_0", "probability_1"]
    pd.testing.assert_frame_equal(remote.drop(columns=proba), local.drop(columns=proba))
    for column in proba:
        np.testing.assert_allclose(remote[column], local[column], atol=1e-6)


def test_workers_compile_the_trees_and_agree_with_onnx_runtime_here(
    tmp_path: Path, trees_bundle: Path, fraud_rows: pd.DataFrame, dask_cluster: Any
) -> None:
    source = tmp_path / "in.parquet"
    fraud_rows.to_parquet(source)
    here = score_file(
        trees_bundle, source, tmp_path / "here.parquet", chunk_rows=1000, engine="onnxruntime"
    )
    there = score_file(
        trees_bundle,
        source,
        tmp_path / "there.parquet",
        chunk_rows=1000,
        dask_address=dask_cluster.scheduler_address,
        engine="compiled",
    )
    assert here.engine == "onnxruntime"
    assert there.engine.startswith("compiled trees (equal to ONNX Runtime on 1,000 rows)")
    local = pd.read_parquet(tmp_path / "here.parquet")
    remote = pd.read_parquet(tmp_path / "there.parquet")
    assert remote["prediction"].tolist() == local["prediction"].tolist()
    np.testing.assert_allclose(remote["probability_1"], local["probability_1"], atol=1e-6)


@pytest.mark.slow
def test_worker_processes_score_a_file_as_this_process_does(
    tmp_path: Path, trees_bundle: Path, fraud_rows: pd.DataFrame
) -> None:
    """Real worker processes: chunks and bundles cross process boundaries, and each worker
    process compiles (or loads from numba's cache) the trees for itself."""
    source = tmp_path / "in.parquet"
    fraud_rows.to_parquet(source)
    score_file(trees_bundle, source, tmp_path / "here.parquet", engine="onnxruntime")
    key = cluster.BundleFiles.read(trees_bundle).key
    loads_here = cluster.LOADS[key]
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=LOOPBACK_HTTP
    ) as local:
        there = score_file(
            trees_bundle,
            source,
            tmp_path / "there.parquet",
            chunk_rows=500,
            dask_address=local.scheduler_address,
            engine="compiled",
        )
    assert sum(there.workers.values()) == 10
    assert cluster.LOADS[key] == loads_here  # the bundle was loaded in the workers, not here
    assert there.engine.startswith("compiled trees (equal to ONNX Runtime")
    local_scores = pd.read_parquet(tmp_path / "here.parquet")
    remote = pd.read_parquet(tmp_path / "there.parquet")
    assert remote["prediction"].tolist() == local_scores["prediction"].tolist()
    np.testing.assert_allclose(remote["probability_1"], local_scores["probability_1"], atol=1e-6)


def test_a_bad_chunk_on_a_worker_fails_the_job(
    tmp_path: Path, fraud_bundle: Path, fraud_rows: pd.DataFrame, dask_cluster: Any
) -> None:
    rows = fraud_rows.copy()
    rows.loc[4321, "account_age_days"] = np.nan
    source, output = tmp_path / "in.parquet", tmp_path / "out.parquet"
    rows.to_parquet(source)
    with pytest.raises(FerryError, match=r"'account_age_days' is empty .* at data row 4322"):
        score_file(
            fraud_bundle,
            source,
            output,
            chunk_rows=500,
            dask_address=dask_cluster.scheduler_address,
        )
    assert not output.exists()


def _inputs(spec: Spec) -> tuple[Prepared, pd.DataFrame, np.ndarray]:
    prep = prepare(spec)
    typed = model_frame(prep.split.train, prep.layout)
    return prep, typed, encode_target(prep.split.train[spec.data.target], prep.labels)


def _measure(model: Any) -> tuple[float, float]:
    return 0.1, 0.1  # latency and size play no part in what is compared here


def _trials(result: SearchResult) -> list[tuple[int, str, str, float]]:
    return [(c.trial, c.family, json.dumps(c.params), c.score) for c in result.candidates]


@pytest.mark.slow
def test_search_on_workers_gives_the_local_trials_and_best(client: Any, workers: set) -> None:
    spec = parse_spec(SEARCH_SPEC)
    prep, typed, target = _inputs(spec)
    warm = {"logistic": {"C": 0.05}}  # a previous best, tried first in both modes
    local = Search(spec, prep.layout, typed, target, measure=_measure, warm_start=warm).run()
    remote_search = DaskSearch(
        spec, prep.layout, typed, target, client=client, measure=_measure, warm_start=warm
    )
    assert remote_search.trials_in_flight == 1  # 2 worker threads, 2 folds a trial
    remote = remote_search.run()
    assert remote.trials_started == local.trials_started == 9
    assert remote.pruned == local.pruned
    assert _trials(remote) == _trials(local)
    assert [c.params for c in remote.candidates if c.trial == 0] == [{"C": 0.05}]
    assert remote.best is not None and local.best is not None
    assert remote.best.score == local.best.score and remote.best.trial == local.best.trial
    # Every finished trial was fitted on the cluster's workers, and the leaderboard says where.
    assert all(c.workers and set(c.workers) <= workers for c in remote.candidates)
    assert all(set(row["workers"]) <= workers for row in remote.leaderboard())
    assert all(c.workers == [] for c in local.candidates)


@pytest.mark.slow
def test_several_trials_in_flight_are_reproducible(client: Any) -> None:
    spec = parse_spec({**SEARCH_SPEC, "search": {**SEARCH_SPEC["search"], "trials": 8}})
    prep, typed, target = _inputs(spec)

    def run() -> SearchResult:
        search = DaskSearch(
            spec, prep.layout, typed, target, client=client, measure=_measure, trials_in_flight=3
        )
        return search.run()

    first, second = run(), run()
    assert first.trials_started == 8
    assert _trials(first) == _trials(second)


def test_train_cli_runs_the_search_on_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dask_cluster: Any, workers: set
) -> None:
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))
    spec = {**SEARCH_SPEC, "search": {**SEARCH_SPEC["search"], "trials": 3}}
    (tmp_path / "ferry.yaml").write_text(yaml.safe_dump(spec))
    _register_groups()
    result = CliRunner().invoke(
        app, ["train", str(tmp_path / "ferry.yaml"), "--dask", dask_cluster.scheduler_address]
    )
    assert result.exit_code == 0, result.output
    boards = list((tmp_path / "home" / "runs").glob("bc-*/leaderboard.json"))
    rows = json.loads(boards[0].read_text())
    assert len(rows) >= 1 and all(row["workers"] and set(row["workers"]) <= workers for row in rows)


def test_an_unreachable_scheduler_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1)  # the client retries until then
    unreachable = "tcp://127.0.0.1:9"  # the discard port: nothing listens there
    with (
        pytest.raises(FerryError, match=r"cannot reach the Dask scheduler at --dask 'tcp://127"),
        cluster.dask_client(unreachable),
    ):
        pass
