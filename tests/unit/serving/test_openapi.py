"""Ferry's own OpenAPI document is well formed: every reference resolves, every path
parameter is declared, every operation documents the error body."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ferry.serving.openapi import openapi_document


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


@pytest.mark.parametrize("admin", [False, True])
def test_document_is_consistent(admin: bool) -> None:
    document = openapi_document(admin=admin)
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    for path, item in document["paths"].items():
        declared = set(re.findall(r"{(\w+)}", path))
        for operation in item.values():
            assert {p["name"] for p in operation["parameters"]} == declared
            assert all(p["required"] for p in operation["parameters"])
            for status in ("400", "404", "503"):
                error = operation["responses"][status]["content"]["application/json"]["schema"]
                assert error == {"$ref": "#/components/schemas/Error"}
    assert any("/repository/" in p for p in document["paths"]) is admin
    assert "${" not in str(document["paths"])  # the published spec's broken placeholders
