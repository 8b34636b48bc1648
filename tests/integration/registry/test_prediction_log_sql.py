"""The database prediction log (monitoring/predlog_sql.py), on SQLite and PostgreSQL.

It lives here to share the registry's database fixtures (a fresh schema per test)."""

import time

from ferry.monitoring.predlog_sql import SqlPredictionLog


def rows(model: str, start: int, count: int, at: float) -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "time": at + i,
            "model": model,
            "version": 1,
            "inputs": {"amount": float(i), "country": "US"},
            "prediction": "0",
            "score": 0.1,
        }
        for i in range(start, start + count)
    ]


def test_write_and_read_back_by_model_and_time(registry_url: str) -> None:
    log = SqlPredictionLog(registry_url)
    now = time.time()
    log.write("fraud", rows("fraud", 0, 100, now))
    log.write("other", rows("other", 0, 5, now))
    log.write("fraud", [])
    everything = list(log.read("fraud"))
    assert [r["id"] for r in everything] == [f"r{i}" for i in range(100)]
    assert everything[3]["inputs"] == {"amount": 3.0, "country": "US"}
    assert [r["id"] for r in log.read("fraud", since=now + 95)] == [f"r{i}" for i in range(95, 100)]
    assert len(list(SqlPredictionLog(registry_url).read("other"))) == 5  # reopen: table kept
    log.close()


def test_sampling_rate_is_honoured(registry_url: str) -> None:
    log = SqlPredictionLog(registry_url, sample_rate=0.25)
    kept = sum(log.sampled() for _ in range(4000))
    assert 850 < kept < 1150


def test_cli_joins_labels_from_the_database_log(registry_url: str, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from ferry.cli.monitor import monitor_app
    from ferry.monitoring.predlog import open_store

    store = open_store(tmp_path / "unused", registry_url)
    store.write("fraud", rows("fraud", 0, 10, time.time()))
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"r{i},0\n" for i in range(8)) + "nope,1\n")
    monkeypatch.setenv("FERRY_PREDICTION_LOG_URL", registry_url)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(monitor_app, ["feedback", "fraud", str(labels)])
    assert result.exit_code == 0, result.output
    assert "matched: 8" in result.output and "unknown: 1" in result.output
