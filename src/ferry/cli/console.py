"""The one rich console the CLI prints through, and the registry built from settings."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
