"""Shared helpers for the end-to-end tests: the ``ferry`` console script run as a subprocess.

Every test gets its own working directory (``tmp_path``) and its own ``FERRY_HOME``; the
environment is a copy of the test process's, with every ``FERRY_*`` variable replaced so a
developer's registry or artifact store is never touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

FERRY = Path(sys.executable).parent / "ferry"
# Rich wraps at 80 columns when stdout is not a terminal; tests that parse tables and paths ask
# for a wide console. The 80-column default is exercised on purpose where it matters.
WIDE = "400"
ACTOR = "e2e-tester"
# Independent invocations run side by side: each one is mostly interpreter start-up and imports.
PARALLEL = 3


@dataclass
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return (
            f"$ ferry {' '.join(self.args)}  -> exit {self.returncode} in {self.seconds:.1f} s\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def ok(self) -> Run:
        assert self.returncode == 0, str(self)
        assert "Traceback" not in self.stderr, str(self)
        return self

    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def error_line(self) -> str:
        """The one ``error: ...`` line an expected failure prints, checked for tidiness."""
        assert self.returncode != 0, str(self)
        assert "Traceback" not in self.output, str(self)
        errors = [line for line in self.stderr_lines() if line.startswith("error: ")]
        assert len(errors) == 1, str(self)
        return errors[0]

    def single_error_line(self) -> str:
        """Like ``error_line`` and stderr holds nothing else: the README's one-line error."""
        line = self.error_line()
        assert self.stderr_lines() == [line], str(self)
        return line

    def printed_path(self, label: str, cwd: Path) -> Path:
        """The path printed after ``label:`` on a line of its own (relative paths from cwd)."""
        found = re.findall(rf"^{re.escape(label)}: (\S.*?)\s*$", self.stdout, re.MULTILINE)
        assert len(found) == 1, f"expected one '{label}:' line\n{self}"
        path = Path(found[0])
        return path if path.is_absolute() else cwd / path


class Ferry:
    """Runs ``ferry`` in ``cwd`` with ``FERRY_HOME=home``."""

    def __init__(self, cwd: Path, home: Path, columns: str = WIDE) -> None:
        self.cwd, self.home = cwd, home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        for noisy in ("FORCE_COLOR", "CLICOLOR_FORCE", "LINES"):
            self.env.pop(noisy, None)
        self.env.update(
            FERRY_HOME=str(home), FERRY_ACTOR=ACTOR, COLUMNS=columns, NO_COLOR="1", TERM="dumb"
        )

    def __call__(
        self, *args: str | Path, timeout: float = 120, env: dict[str, str] | None = None
    ) -> Run:
        argv = tuple(str(a) for a in args)
        started = time.perf_counter()
        done = subprocess.run(
            [str(FERRY), *argv],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        seconds = time.perf_counter() - started
        return Run(argv, done.returncode, done.stdout, done.stderr, seconds)

    def many(self, *commands: Sequence[str | Path], timeout: float = 120) -> list[Run]:
        """Independent commands run concurrently; results in the order given."""
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            futures = [pool.submit(self, *cmd, timeout=timeout) for cmd in commands]
            return [f.result() for f in futures]


@pytest.fixture
def ferry(tmp_path: Path) -> Ferry:
    assert FERRY.is_file(), f"the ferry console script is not installed next to {sys.executable}"
    work = tmp_path / "work"
    work.mkdir()
    return Ferry(work, tmp_path / "home")


def write_spec(path: Path, **sections: Any) -> Path:
    """A ferry.yaml from keyword sections: ``write_spec(p, name="bc", data={...})``."""
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return path


def breast_cancer_spec(path: Path, name: str = "bc", **overrides: Any) -> Path:
    """A small, fast spec on scikit-learn's bundled breast cancer set; sections can be replaced."""
    sections: dict[str, Any] = {
        "name": name,
        "task": "classification",
        "data": {"source": "builtin:breast_cancer", "target": "target"},
        "search": {"families": ["logistic", "hist_gb"], "time_budget_s": 15, "trials": 4},
    }
    sections.update(overrides)
    return write_spec(path, **sections)


@pytest.fixture
def bc_spec() -> Callable[..., Path]:
    """``breast_cancer_spec`` as a fixture (test modules cannot import conftest: importlib mode)."""
    return breast_cancer_spec
