"""The REST status table and error bodies, without a server."""

from __future__ import annotations

import orjson
import pytest

from ferry.errors import ErrorCode, FerryError, SignatureError
from ferry.serving.auth import Forbidden, Unauthorized
from ferry.serving.batching import Overloaded, TimedOut
from ferry.serving.pool import ModelNotFound
from ferry.serving.rest import HTTP_STATUS, BadContentType, BodyTooLarge, error_response


def test_every_error_code_has_a_status() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (SignatureError("bad input 'x'"), 400),
        (Unauthorized("no token"), 401),
        (Forbidden("wrong token"), 403),
        (ModelNotFound("no model 'm'"), 404),
        (BodyTooLarge("too big"), 413),
        (BadContentType("text/csv"), 415),
        (Overloaded("queue full"), 503),
        (TimedOut("slow"), 503),
        (FerryError("boom"), 500),
    ],
)
def test_error_response(error: FerryError, status: int) -> None:
    response = error_response(error)
    assert response.status_code == status
    assert orjson.loads(response.body) == {"error": error.message}
    assert response.media_type == "application/json"
    retry = response.headers.get("retry-after")
    assert retry == ("1" if status == 503 else None)
