"""Make this interpreter look like the slim `serve` image: modules of packages the image does
not install cannot be imported.

Python imports ``sitecustomize`` at start-up from ``sys.path``, so a process started with this
directory first on ``PYTHONPATH`` (and every worker it spawns) gets the block. Settings come
from the environment:

- ``SLIM_BLOCKED``: comma-separated top-level module names to refuse;
- ``SLIM_BLOCK_LOG``: a file that receives one JSON line per refused import, naming the module
  and the file whose code asked for it (so a test can tell Ferry's imports from a library's
  optional ones, which the real image refuses the same way).
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
from typing import Any

_HERE = os.path.abspath(__file__)


def _importer() -> str:
    """The first frame outside the import machinery and this file: who asked for the module."""
    frame: Any = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith("<frozen") and os.path.abspath(name) != _HERE:
            return name
        frame = frame.f_back
    return "?"


class _SlimImage(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: frozenset[str], log: str) -> None:
        self.blocked = blocked
        self.log = log

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] not in self.blocked:
            return None
        if self.log:
            record = {"module": fullname, "importer": _importer(), "pid": os.getpid()}
            with open(self.log, "a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
        # What the image raises for a package it does not have.
        raise ModuleNotFoundError(f"No module named {fullname!r} (not in the serve image)",
                                  name=fullname)


_blocked = frozenset(n for n in os.environ.get("SLIM_BLOCKED", "").split(",") if n)
if _blocked:
    sys.meta_path.insert(0, _SlimImage(_blocked, os.environ.get("SLIM_BLOCK_LOG", "")))
