"""Token scopes: who may call what."""

from __future__ import annotations

import pytest

from ferry.serving.auth import Forbidden, TokenAuth, Unauthorized

BOTH = TokenAuth(predict_tokens=("p1", "p2"), admin_tokens=("a",))


@pytest.mark.parametrize(
    ("auth", "header", "scope", "outcome"),
    [
        (TokenAuth(), None, "predict", None),
        (TokenAuth(), None, "public", None),
        (BOTH, None, "public", None),
        (BOTH, None, "predict", Unauthorized),
        (BOTH, "Token p1", "predict", Unauthorized),
        (BOTH, "Bearer p3", "predict", Forbidden),
        (BOTH, "Bearer p2", "predict", None),
        (BOTH, "BEARER p1", "predict", None),
        (BOTH, "Bearer a", "predict", None),
        (BOTH, "Bearer p1", "admin", Forbidden),
        (BOTH, None, "admin", Unauthorized),
        (BOTH, "Bearer a", "admin", None),
        (BOTH, "Bearer é", "predict", Forbidden),
        (TokenAuth(admin_tokens=("a",)), None, "predict", None),
        (TokenAuth(admin_tokens=("a",)), "Bearer x", "admin", Forbidden),
        (TokenAuth(predict_tokens=("p-1",)), "Bearer p-1", "admin", Forbidden),
    ],
)
def test_check(auth: TokenAuth, header: str | None, scope: str, outcome: type | None) -> None:
    if outcome is None:
        auth.check(header, scope)
    else:
        with pytest.raises(outcome) as raised:
            auth.check(header, scope)
        assert header is None or header.split()[-1] not in str(raised.value)  # never echoed


def test_flags() -> None:
    assert not TokenAuth().admin_enabled and not TokenAuth().predict_required
    assert BOTH.admin_enabled and BOTH.predict_required
