"""Model references: ``fraud`` (latest), ``fraud:3`` (a version), ``fraud@production`` (alias)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ferry.errors import RefError

# Names end up in paths and URLs; this pattern is what keeps them safe (see REFERENCES.md).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def check_name(name: str, what: str = "model name") -> str:
    if ".." in name or not NAME_PATTERN.match(name):
        raise RefError(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    if not ALIAS_PATTERN.match(alias):
        raise RefError(
            f"invalid alias {alias!r}: use 1-64 letters, digits, '_' or '-', starting with a letter"
        )
    if alias.isdigit():
        raise RefError(f"invalid alias {alias!r}: an alias cannot be a number")
    return alias


def parse_ref(text: str) -> ModelRef:
    """Parse ``name``, ``name:VERSION`` or ``name@ALIAS``."""
    text = text.strip()
    if "@" in text:
        name, alias = text.split("@", 1)
        return ModelRef(check_name(name), alias=check_alias(alias))
    if ":" in text:
        name, version = text.split(":", 1)
        if not version.isdigit() or int(version) < 1:
            raise RefError(
                f"invalid version in {text!r}: expected a positive integer like {name}:3"
            )
        return ModelRef(check_name(name), version=int(version))
    return ModelRef(check_name(text))
