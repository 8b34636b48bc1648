"""Rich progress for the lab: a stage line and a search bar that runs on the time budget."""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ferry.cli.console import console

if TYPE_CHECKING:
    from ferry.training.search import Candidate


class RichObserver:
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

    def __enter__(self) -> RichObserver:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.update(self.stage_task, description="done", total=1, completed=1)
        self.progress.stop()

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
