"""The one rich console the CLI prints through, and the registry built from settings."""

from __future__ import annotations

from rich.console import Console

# soft_wrap: piped output keeps long paths and one-line errors on one line.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
