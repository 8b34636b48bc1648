"""The prediction log: every served row (or a sample), written in batches off the hot path.

Rows go to rotating JSON-lines files under one directory per model: a file is closed at
``max_file_bytes`` and the oldest files are deleted beyond ``max_files``, so disk use is bounded.
Writes happen in the monitor's background loop; what is lost on a crash is at most the rows
buffered since the last flush (one flush interval, 0.1 s by default).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from ferry.core.refs import check_name

LABELS = "labels"  # the sub-directory of a model's log that holds its late labels


class PredictionStore(Protocol):
    """What the monitor writes to and the CLI reads from: files or a database."""

    def sampled(self) -> bool: ...

    def write(self, model: str, rows: list[dict[str, Any]]) -> None: ...

    def read(self, model: str, since: float = 0.0) -> Iterator[dict[str, Any]]: ...

    def write_labels(self, model: str, rows: list[dict[str, Any]]) -> None: ...

    def read_labels(self, model: str, since: float = 0.0) -> Iterator[dict[str, Any]]: ...


def open_store(
    directory: Path, url: str | None = None, sample_rate: float = 1.0
) -> PredictionStore:
    """The database log when a URL is given (several replicas), else the file log."""
    if url:
        from ferry.monitoring.predlog_sql import SqlPredictionLog

        return SqlPredictionLog(url, sample_rate)
    return PredictionLog(LogConfig(directory, sample_rate))


@dataclass(frozen=True)
class LogConfig:
    directory: Path
    sample_rate: float = 1.0
    max_file_bytes: int = 64 * 1024 * 1024
    max_files: int = 20


class PredictionLog:
    def __init__(self, config: LogConfig) -> None:
        self.config = config
        self.random = random.Random(0)

    def sampled(self) -> bool:
        return self.config.sample_rate >= 1.0 or self.random.random() < self.config.sample_rate

    def _directory(self, model: str) -> Path:
        path = self.config.directory / check_name(model)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _current(self, model: str, kind: str = "") -> Path:
        directory = self._directory(model) / kind
        directory.mkdir(exist_ok=True)
        files = sorted(directory.glob("*.jsonl"))
        if files and files[-1].stat().st_size < self.config.max_file_bytes:
            return files[-1]
        for old in files[: max(len(files) + 1 - self.config.max_files, 0)]:
            old.unlink(missing_ok=True)
        return directory / f"{time.time_ns():020d}.jsonl"

    def write(self, model: str, rows: list[dict[str, Any]]) -> None:
        """Append rows (blocking file IO: call from a worker thread)."""
        if not rows:
            return
        payload = b"".join(
            orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for row in rows
        )
        with self._current(model).open("ab") as handle:
            handle.write(payload)

    def read(self, model: str, since: float = 0.0) -> Iterator[dict[str, Any]]:
        return self._read(self.config.directory / check_name(model), since)

    def write_labels(self, model: str, rows: list[dict[str, Any]]) -> None:
        """Late labels ``{"id", "time", "label"}`` beside the predictions, rotated the same way."""
        if rows:
            payload = b"".join(orjson.dumps(row) + b"\n" for row in rows)
            with self._current(model, LABELS).open("ab") as handle:
                handle.write(payload)

    def read_labels(self, model: str, since: float = 0.0) -> Iterator[dict[str, Any]]:
        return self._read(self.config.directory / check_name(model) / LABELS, since)

    @staticmethod
    def _read(directory: Path, since: float) -> Iterator[dict[str, Any]]:
        for path in sorted(directory.glob("*.jsonl")):
            with path.open("rb") as handle:
                for line in handle:
                    row = orjson.loads(line)
                    if row.get("time", 0) >= since:
                        yield row
