"""Rich progress: the lab's stage line and search bar that runs on the time budget, and the
bar over a scored file's rows."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Self

from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ferry.cli.console import console

if TYPE_CHECKING:
    from ferry.training.search import Candidate


class _LiveBars:
    """A rich Progress shown while the ``with`` block runs; ``finish`` closes the bars."""

    progress: Progress

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(succeeded=kind is None)
        self.progress.stop()

    def finish(self, succeeded: bool) -> None:
        return None


class RichObserver(_LiveBars):
    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.stage_task = self.progress.add_task("starting", total=None, detail="")
        self.search_task: TaskID | None = None
        self.started = time.perf_counter()
        self.best: float | None = None
        self.trials = 0

    def finish(self, succeeded: bool) -> None:
        self.progress.update(self.stage_task, description="done", total=1, completed=1)

    def stage(self, text: str) -> None:
        self.progress.update(self.stage_task, description=text)
        if text.startswith("searching") and self.search_task is None:
            self.search_task = self.progress.add_task(
                "search budget", total=self.budget_s, detail=""
            )
            self.started = time.perf_counter()
        elif self.search_task is not None:
            self.progress.update(self.search_task, completed=self.budget_s)

    def trial(self, candidate: Candidate | None, seconds_left: float) -> None:
        if self.search_task is None or candidate is None:  # before the search or a pruned trial
            return
        self.trials += 1
        if self.best is None or candidate.score > self.best:
            self.best = candidate.score
        elapsed = min(time.perf_counter() - self.started, self.budget_s)
        detail = f"{self.trials} trials, last {candidate.family} {candidate.score:.4f}"
        self.progress.update(self.search_task, completed=elapsed, detail=detail)


class RowsProgress(_LiveBars):
    """A rich bar over the input's rows (estimated for CSV), with the scoring speed."""

    def __init__(self) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("scoring"),
            BarColumn(),
            TextColumn("{task.fields[rows]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task: TaskID | None = None
        self.done = 0

    def finish(self, succeeded: bool) -> None:
        if self.task is not None and succeeded:
            self.progress.update(self.task, total=self.done, completed=self.done)

    def start(self, total_rows: int | None) -> None:
        self.task = self.progress.add_task("scoring", total=total_rows, rows="")

    def advance(self, rows: int) -> None:
        assert self.task is not None
        self.done += rows
        task = self.progress.tasks[self.task]
        # A CSV's row count is an estimate: let the bar's end follow the rows really read.
        total = max(task.total or 0, self.done)
        self.progress.update(self.task, advance=rows, total=total, rows=f"{self.done:,} rows")
