import pytest

from ferry.core.refs import ModelRef, parse_ref
from ferry.errors import RefError


def test_parse_forms() -> None:
    assert parse_ref("fraud") == ModelRef("fraud")
    assert parse_ref("fraud:3") == ModelRef("fraud", version=3)
    assert parse_ref("fraud@production") == ModelRef("fraud", alias="production")
    assert str(parse_ref("fraud@production")) == "fraud@production"
    assert str(parse_ref("fraud:3")) == "fraud:3"


@pytest.mark.parametrize(
    "text", ["fraud:0", "fraud:x", "fraud:-1", "../x", "a/b", "", "fraud@1", "fraud@", "x" * 129]
)
def test_bad_refs_rejected(text: str) -> None:
    with pytest.raises(RefError):
        parse_ref(text)
