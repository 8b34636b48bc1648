"""The prediction log in a database (PostgreSQL for several replicas; SQLite works too).

Same interface as the file log (``write``, ``read``, ``sampled``, and the late labels): one row
per served row, the whole log row as JSON, indexed by model and time. Writes are one multi-row
INSERT per flush, from the monitor's worker thread.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from ferry.core.refs import check_name
from ferry.registry.sql import normalize_url

_metadata = sa.MetaData()


def _log_table(name: str, *columns: sa.Column[Any]) -> sa.Table:
    """An append-only log: a sequence, the row id, the model, the time (indexed with the
    model, as every read asks for one model's recent rows) and ``columns``."""
    return sa.Table(
        name,
        _metadata,
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        *columns,
        sa.Index(f"ix_{name}_model_time", "model", "time"),
    )


predictions = _log_table(
    "ferry_predictions",
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("row", sa.Text, nullable=False),
)
labels = _log_table("ferry_labels", sa.Column("label", sa.Text, nullable=False))


class SqlPredictionLog:
    def __init__(self, url: str, sample_rate: float = 1.0) -> None:
        # The registry's URL rules: plain postgresql:// uses psycopg 3, sqlite paths work.
        parsed = normalize_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(parsed, pool_pre_ping=True)
        _metadata.create_all(self.engine, checkfirst=True)
        self.sample_rate = sample_rate
        self.random = random.Random(0)

    def sampled(self) -> bool:
        return self.sample_rate >= 1.0 or self.random.random() < self.sample_rate

    def write(self, model: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        check_name(model)
        values = [
            {
                "id": str(r["id"]),
                "model": model,
                "version": int(r["version"]),
                "time": float(r["time"]),
                "row": orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
            }
            for r in rows
        ]
        self._append(predictions, values)

    def read(self, model: str, since: float = 0.0) -> Iterator[dict[str, Any]]:
        for (text,) in self._recent(predictions, [predictions.c.row], model, since):
            yield orjson.loads(text)

    def write_labels(self, model: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        check_name(model)
        values = [
            {
                "id": str(r["id"]),
                "model": model,
                "time": float(r["time"]),
                "label": orjson.dumps(r["label"]).decode(),
            }
            for r in rows
        ]
        self._append(labels, values)

    def read_labels(self, model: str, since: float = 0.0) -> Iterator[dict[str, Any]]:
        columns = [labels.c.id, labels.c.time, labels.c.label]
        for row_id, at, text in self._recent(labels, columns, model, since):
            yield {"id": row_id, "time": at, "label": orjson.loads(text)}

    def _append(self, table: sa.Table, values: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.insert(), values)

    def _recent(
        self, table: sa.Table, columns: list[sa.Column[Any]], model: str, since: float
    ) -> Iterator[tuple[Any, ...]]:
        """``columns`` of ``model``'s rows logged at or after ``since``, oldest first."""
        query = (
            sa.select(*columns)
            .where(table.c.model == check_name(model), table.c.time >= since)
            .order_by(table.c.time, table.c.seq)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield tuple(row)

    def close(self) -> None:
        self.engine.dispose()
