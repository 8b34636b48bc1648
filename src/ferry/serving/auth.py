"""Optional bearer tokens with two scopes: ``predict`` (data plane) and ``admin`` (repository)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from ferry.errors import ErrorCode, FerryError


class Unauthorized(FerryError):
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(FerryError):
    code = ErrorCode.PERMISSION_DENIED


@dataclass(frozen=True)
class TokenAuth:
    predict_tokens: tuple[str, ...] = ()
    admin_tokens: tuple[str, ...] = ()

    @property
    def predict_required(self) -> bool:
        return bool(self.predict_tokens)

    @property
    def admin_enabled(self) -> bool:
        return bool(self.admin_tokens)

    def check(self, header: str | None, scope: str) -> None:
        if scope == "public":
            return
        allowed = (
            self.admin_tokens if scope == "admin" else (*self.predict_tokens, *self.admin_tokens)
        )
        if scope != "admin" and not self.predict_required:
            return
        token = _bearer(header)
        # Compare against every token, always: the time taken must not reveal which matched.
        matched = False
        for candidate in allowed:
            matched |= hmac.compare_digest(token.encode(), candidate.encode())
        if not matched:
            raise Forbidden(f"the token does not grant the {scope!r} scope")


def _bearer(header: str | None) -> str:
    if not header or not header.lower().startswith("bearer "):
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    return header[7:].strip()
