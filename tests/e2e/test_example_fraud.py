"""examples/fraud end to end, as its README runs it: ``ferry train`` the example spec, import
the LightGBM model ``train_elsewhere.py`` makes, then one real ``ferry serve`` answering both
models and joining a late label."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from serve_support import Server, ferry_env, run_ferry, start_server

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"
# The README's transaction: card not present, far from home, new account, crypto, at 3 am.
ROW = {
    "amount": 912.5,
    "merchant_category": "crypto",
    "country": "NG",
    "card_present": False,
    "customer_age": 23,
    "account_age_days": 12,
    "distance_from_home_km": 4200,
    "txn_count_24h": 9,
    "device": "desktop",
    "timestamp": "2024-03-01T03:12:00Z",
}
LGBM_COLUMNS = [
    "amount",
    "customer_age",
    "account_age_days",
    "distance_from_home_km",
    "txn_count_24h",
    "card_present",
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("fraud-home")
    spec = str(EXAMPLE / "ferry.yaml")
    trained = run_ferry(
        home, "train", spec, "--alias", "production", "--time-budget", "15", timeout=600
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "registered: fraud:1" in trained.stdout
    assert "alias: fraud@production -> 1" in trained.stdout
    return home


@pytest.fixture(scope="module")
def booster_file(home: Path) -> Path:
    """The README's model trained elsewhere (fewer rows and rounds: the same code path)."""
    out = home / "fraud_lgbm.txt"
    script = str(EXAMPLE / "train_elsewhere.py")
    subprocess.run(
        [sys.executable, script, "--out", str(out), "--rows", "5000", "--rounds", "40"],
        env=ferry_env(home),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def imported(home: Path, booster_file: Path) -> str:
    run = run_ferry(
        home,
        "import",
        "fraud-lgbm",
        str(booster_file),
        "--sample",
        "builtin:fraud",
        "--target",
        "is_fraud",
        "--rows",
        "5000",
        "--alias",
        "production",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def server(home: Path, imported: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    spec = str(EXAMPLE / "ferry.yaml")
    running = start_server(
        home, tmp_path_factory.mktemp("fraud-serve"), "--spec", spec, "fraud-lgbm@production"
    )
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_trained_model_answers_and_joins_a_late_label(server: Server) -> None:
    body = {"id": "txn-1", "instances": [ROW]}
    response = httpx.post(f"{server.url}/v1/models/fraud:predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "txn-1" and answer["model_version"] == "1"
    prediction = answer["predictions"][0]
    assert prediction["label"] in ("0", "1")
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # A transaction like this is far riskier than the ~2% base rate.
    assert prediction["probabilities"]["1"] > 0.05
    feedback = httpx.post(
        f"{server.url}/v2/models/fraud/feedback", json=[{"id": "txn-1", "label": "1"}], timeout=30
    )
    assert feedback.status_code == 200, feedback.text
    assert feedback.json() == {"matched": 1, "unknown": 0}


def test_imported_model_answers_as_lightgbm_does(
    server: Server, imported: str, booster_file: Path
) -> None:
    import lightgbm

    assert "registered: fraud-lgbm:1" in imported and "parity: max |Δ|" in imported
    rows = [
        {c: ROW[c] for c in LGBM_COLUMNS},
        {**{c: ROW[c] for c in LGBM_COLUMNS}, "amount": 12.5, "customer_age": None},
    ]
    response = httpx.post(
        f"{server.url}/v1/models/fraud-lgbm:predict", json={"instances": rows}, timeout=30
    )
    assert response.status_code == 200, response.text
    served = [p["probabilities"]["1"] for p in response.json()["predictions"]]
    matrix = np.asarray(
        [[np.nan if r[c] is None else float(r[c]) for c in LGBM_COLUMNS] for r in rows]
    )
    expected = lightgbm.Booster(model_file=str(booster_file)).predict(matrix)
    np.testing.assert_allclose(served, expected, atol=1e-5)
