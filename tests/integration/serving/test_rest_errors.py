"""Malformed requests get the status of the protocol's table and a clean ``{"error": ...}``
that names what was wrong, never a traceback or a server path, and the server stays live."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from ferry.serving.dataplane import Limits

pytestmark = pytest.mark.anyio

MAX_BODY = 256 * 1024
INFER = "/v2/models/fraud/infer"
PREDICT = "/v1/models/fraud:predict"
Build = Callable[[Any], dict[str, Any]]


def no_body(fraud: Any) -> dict[str, Any]:
    return {}


@pytest.fixture(scope="module")
async def served(serve, fraud, cancer) -> AsyncIterator[Any]:
    refs = [str(fraud.bundle), str(cancer.bundle)]
    async with serve(refs, max_body=MAX_BODY, limits=Limits(max_rows=500)) as served:
        yield served


async def assert_error(served, response, status: int, *needles: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    message: str = body["error"]
    for leak in ("Traceback", "/work", "/tmp", ".py", "site-packages"):
        assert leak not in message, message
    for needle in needles:
        assert needle in message, message
    assert await served.live(), "the server must stay live after a bad request"
    return message


def tensors(fraud, rows: int = 2, **changes: dict[str, Any]) -> list[dict[str, Any]]:
    """The fraud tensors for ``rows`` rows, with some tensors' fields replaced."""
    out = fraud.tensors(fraud.rows(0, rows))
    for tensor in out:
        tensor.update(changes.get(tensor["name"], {}))
    return out


def infer(**changes: dict[str, Any]) -> Build:
    return lambda fraud: {"json": {"inputs": tensors(fraud, **changes)}}


def raw(content: bytes, content_type: str = "application/json") -> Build:
    return lambda fraud: {"content": content, "headers": {"content-type": content_type}}


def records(change: Callable[[list[dict[str, Any]]], Any]) -> Build:
    def build(fraud: Any) -> dict[str, Any]:
        rows = fraud.records(fraud.rows(0, 2))
        return {"json": {"instances": change(rows)}}

    return build


def _set(rows: list[dict[str, Any]], key: str, value: Any) -> list[dict[str, Any]]:
    rows[1][key] = value
    return rows


def _drop(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    del rows[0][key]
    return rows


def _duplicate(fraud: Any) -> dict[str, Any]:
    inputs = tensors(fraud)
    return {"json": {"inputs": [*inputs, inputs[0]]}}


def _missing(fraud: Any) -> dict[str, Any]:
    return {"json": {"inputs": [t for t in tensors(fraud) if t["name"] != "amount"]}}


def _unknown(fraud: Any) -> dict[str, Any]:
    extra = {"name": "colour", "datatype": "FP32", "shape": [2], "data": [1, 2]}
    return {"json": {"inputs": [*tensors(fraud), extra]}}


def _row_counts(fraud: Any) -> dict[str, Any]:
    inputs = tensors(fraud)
    inputs[0].update(shape=[1], data=inputs[0]["data"][:1])
    return {"json": {"inputs": inputs}}


def _deep(depth: int) -> bytes:
    return b'{"inputs": [{"name": "amount", "datatype": "FP32", "shape": [1], "data": ' + (
        b"[" * depth + b"1.0" + b"]" * depth + b"}]}"
    )


CASES: list[tuple[str, str, str, Build, int, tuple[str, ...]]] = [
    # -- the body itself
    ("invalid-json", "POST", INFER, raw(b'{"inputs": ['), 400, ("not valid JSON",)),
    ("empty-body", "POST", INFER, raw(b""), 400, ("not valid JSON",)),
    ("nan-literal", "POST", INFER, raw(b'{"inputs": [NaN]}'), 400, ("not valid JSON",)),
    ("bad-utf8", "POST", INFER, raw(b'{"id": "\xff\xfe"}'), 400, ("not valid JSON",)),
    ("deep-nesting", "POST", INFER, raw(_deep(100_000)), 400, ("not valid JSON",)),
    ("wrong-content-type", "POST", INFER, raw(b"{}", "text/csv"), 415, ("application/json",)),
    ("xml-content-type", "POST", PREDICT, raw(b"<a/>", "application/xml"), 415, ("json",)),
    # curl -d labels JSON as a form: accepted, but the body must still be JSON
    (
        "form-body",
        "POST",
        PREDICT,
        raw(b"a=1", "application/x-www-form-urlencoded"),
        400,
        ("not valid JSON",),
    ),
    ("body-is-list", "POST", INFER, raw(b"[1, 2]"), 400, ("JSON object",)),
    ("body-is-string", "POST", INFER, raw(b'"inputs"'), 400, ("JSON object",)),
    ("body-is-null", "POST", PREDICT, raw(b"null"), 400, ("JSON object",)),
    # -- the inputs list
    ("missing-inputs", "POST", INFER, lambda f: {"json": {"id": "x"}}, 400, ("'inputs'",)),
    ("empty-inputs", "POST", INFER, lambda f: {"json": {"inputs": []}}, 400, ("'inputs'",)),
    ("inputs-object", "POST", INFER, lambda f: {"json": {"inputs": {}}}, 400, ("'inputs'",)),
    ("tensor-not-object", "POST", INFER, lambda f: {"json": {"inputs": [1]}}, 400, ("name",)),
    ("tensor-name-list", "POST", INFER, infer(amount={"name": ["amount"]}), 400, ("name",)),
    ("missing-input", "POST", INFER, _missing, 400, ("missing ['amount']",)),
    ("unknown-input", "POST", INFER, _unknown, 400, ("unknown ['colour']",)),
    ("duplicate-input", "POST", INFER, _duplicate, 400, ("'amount'", "twice")),
    ("row-counts-differ", "POST", INFER, _row_counts, 400, ("same number of rows",)),
    # -- one tensor
    ("negative-dim", "POST", INFER, infer(amount={"shape": [-2]}), 400, ("'amount'", "negative")),
    ("huge-shape", "POST", INFER, infer(amount={"shape": [10**12]}), 400, ("'amount'", "limit")),
    (
        "huge-shape-product",
        "POST",
        INFER,
        infer(amount={"shape": [100_000, 100_000, 100_000]}),
        400,
        ("'amount'", "limit"),
    ),
    (
        "zero-times-huge",
        "POST",
        INFER,
        infer(amount={"shape": [0, 10**30], "data": []}),
        400,
        ("'amount'",),
    ),
    (
        "too-many-dims",
        "POST",
        INFER,
        infer(amount={"shape": [1] * 100, "data": [1.0]}),
        400,
        ("'amount'",),
    ),
    ("shape-not-list", "POST", INFER, infer(amount={"shape": "2"}), 400, ("'amount'", "shape")),
    ("shape-of-floats", "POST", INFER, infer(amount={"shape": [2.0]}), 400, ("'amount'",)),
    (
        "shape-count-mismatch",
        "POST",
        INFER,
        infer(amount={"shape": [3]}),
        400,
        ("'amount'", "needs 3 values"),
    ),
    (
        "unknown-datatype",
        "POST",
        INFER,
        infer(amount={"datatype": "FP128"}),
        400,
        ("'amount'", "FP128"),
    ),
    ("missing-datatype", "POST", INFER, infer(amount={"datatype": None}), 400, ("'amount'",)),
    ("abc-as-fp32", "POST", INFER, infer(amount={"data": ["abc", 1.0]}), 400, ("'amount'", "abc")),
    (
        "abc-in-the-middle",
        "POST",
        INFER,
        infer(amount={"shape": [3], "data": [1.0, "abc", 2.0]}),
        400,
        ("'amount'", "abc"),
    ),
    ("object-in-data", "POST", INFER, infer(amount={"data": [{"v": 1}, 1.0]}), 400, ("'amount'",)),
    ("data-not-list", "POST", INFER, infer(amount={"data": 5.0}), 400, ("'amount'",)),
    ("ragged-data", "POST", INFER, infer(amount={"data": [1.0, [2.0]]}), 400, ("'amount'",)),
    (
        "ragged-bool",
        "POST",
        INFER,
        infer(card_present={"data": [True, [False]]}),
        400,
        ("'card_present'",),
    ),
    (
        "string-in-bool",
        "POST",
        INFER,
        infer(card_present={"data": ["false", True]}),
        400,
        ("'card_present'",),
    ),
    (
        "null-not-nullable",
        "POST",
        INFER,
        infer(amount={"data": [None, 1.0]}),
        400,
        ("'amount'", "null"),
    ),
    (
        "null-datetime",
        "POST",
        INFER,
        infer(timestamp={"data": [None, "2024-01-02T00:00:00"]}),
        400,
        ("'timestamp'",),
    ),
    (
        "bad-datetime",
        "POST",
        INFER,
        infer(timestamp={"data": ["yesterday", "2024-01-02"]}),
        400,
        ("'timestamp'", "yesterday", "ISO 8601"),
    ),
    (
        "categorical-as-fp32",
        "POST",
        INFER,
        infer(country={"datatype": "FP32", "data": [1, 2]}),
        400,
        ("'country'", "BYTES"),
    ),
    (
        "numeric-as-bytes",
        "POST",
        INFER,
        infer(amount={"datatype": "BYTES", "data": ["1", "2"]}),
        400,
        ("'amount'",),
    ),
    (
        "dict-in-bytes",
        "POST",
        INFER,
        infer(country={"data": [{"a": 1}, "US"]}),
        400,
        ("'country'",),
    ),
    ("not-a-column", "POST", INFER, infer(amount={"shape": [1, 2]}), 400, ("'amount'", "column")),
    (
        "too-many-rows",
        "POST",
        INFER,
        infer(**{s: {"shape": [501], "data": [None] * 501} for s in ["amount"]}),
        400,
        ("'amount'",),
    ),
    (
        "unknown-output",
        "POST",
        INFER,
        lambda f: {"json": {"inputs": tensors(f), "outputs": [{"name": "score"}]}},
        400,
        ("score",),
    ),
    (
        "outputs-not-list",
        "POST",
        INFER,
        lambda f: {"json": {"inputs": tensors(f), "outputs": "label"}},
        400,
        ("'outputs'",),
    ),
    # -- records
    ("instances-missing", "POST", PREDICT, lambda f: {"json": {"inputs": []}}, 400, ("instances",)),
    ("instances-empty", "POST", PREDICT, records(lambda r: []), 400, ("instances",)),
    ("instance-not-object", "POST", PREDICT, records(lambda r: [1, 2]), 400, ("instance 0",)),
    (
        "unknown-field",
        "POST",
        PREDICT,
        records(lambda r: _set(r, "colour", "red")),
        400,
        ("instance 1", "colour"),
    ),
    (
        "string-for-number",
        "POST",
        PREDICT,
        records(lambda r: _set(r, "amount", "12.5")),
        400,
        ("instance 1", "'amount'"),
    ),
    (
        "list-for-number",
        "POST",
        PREDICT,
        records(lambda r: _set(r, "amount", [1])),
        400,
        ("'amount'",),
    ),
    (
        "null-in-record",
        "POST",
        PREDICT,
        records(lambda r: _set(r, "amount", None)),
        400,
        ("'amount'",),
    ),
    (
        "null-datetime-record",
        "POST",
        PREDICT,
        records(lambda r: _set(r, "timestamp", None)),
        400,
        ("'timestamp'",),
    ),
    (
        "missing-field",
        "POST",
        PREDICT,
        records(lambda r: _drop(r, "amount")),
        400,
        ("instance 0", "'amount'"),
    ),
    ("too-many-records", "POST", PREDICT, records(lambda r: r * 251), 400, ("502 rows", "split")),
    # -- routing
    ("unknown-model", "POST", "/v2/models/nope/infer", infer(), 404, ("'nope'",)),
    ("unknown-model-metadata", "GET", "/v2/models/nope", no_body, 404, ("'nope'",)),
    ("unknown-model-ready", "GET", "/v2/models/nope/ready", no_body, 404, ("'nope'",)),
    ("unknown-model-records", "POST", "/v1/models/nope:predict", records(list), 404, ("'nope'",)),
    ("unknown-version", "POST", "/v2/models/fraud/versions/9/infer", infer(), 404, ("9",)),
    ("version-not-number", "GET", "/v2/models/fraud/versions/x", no_body, 404, ("'x'",)),
    ("version-superscript", "GET", "/v2/models/fraud/versions/%C2%B2", no_body, 404, ()),
    ("version-huge", "GET", "/v2/models/fraud/versions/" + "9" * 5000, no_body, 404, ()),
    ("unknown-route", "GET", "/v3/models", no_body, 404, ("/v3/models",)),
    ("get-on-infer", "GET", INFER, no_body, 405, ("GET",)),
    ("put-on-predict", "PUT", PREDICT, records(list), 405, ("PUT",)),
    ("delete-on-live", "DELETE", "/v2/health/live", no_body, 405, ("DELETE",)),
    ("post-on-metadata", "POST", "/v2/models/fraud", infer(), 405, ("POST",)),
    # -- size
    ("oversize-declared", "POST", INFER, raw(b" " * (MAX_BODY + 1)), 413, ("limit",)),
]


@pytest.mark.parametrize(
    ("method", "path", "build", "status", "needles"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_malformed_request(served, fraud, method, path, build, status, needles) -> None:
    response = await served.client.request(method, path, **build(fraud))
    await assert_error(served, response, status, *needles)


async def test_wrong_method_says_what_is_allowed(served) -> None:
    response = await served.client.get(INFER)
    await assert_error(served, response, 405)
    assert response.headers.get("allow") == "POST"


async def test_chunked_body_over_the_limit(served) -> None:
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 4 MiB in all, far over the limit, with no content-length
            sent += 1
            yield b" " * 65536

    request = served.client.build_request("POST", INFER, content=body())
    assert "content-length" not in request.headers
    response = await served.client.send(request)
    await assert_error(served, response, 413, "limit")
    assert sent <= MAX_BODY // 65536 + 2, "the server read on past the limit"


async def test_body_just_under_the_limit_is_parsed(served, fraud) -> None:
    payload = orjson.dumps({"inputs": tensors(fraud)})
    padded = payload + b" " * (MAX_BODY - len(payload))
    response = await served.client.post(INFER, content=padded)
    assert response.status_code == 200, response.text


async def test_nesting_within_the_parser_limit_is_not_a_crash(served) -> None:
    response = await served.client.post(INFER, content=_deep(1000))
    assert response.status_code == 400
    assert list(response.json()) == ["error"]


async def test_zero_rows_give_empty_outputs(served, fraud) -> None:
    inputs = [{**t, "shape": [0], "data": []} for t in tensors(fraud)]
    response = await served.client.post(INFER, json={"inputs": inputs})
    assert response.status_code == 200, response.text
    shapes = {o["name"]: o["shape"] for o in response.json()["outputs"]}
    assert shapes == {"label": [0], "probabilities": [0, 2]}


async def test_error_in_one_request_does_not_disturb_the_next(served, fraud) -> None:
    for build, _ in ((infer(amount={"data": ["abc", 1.0]}), 400), (infer(), 200)):
        response = await served.client.post(INFER, **build(fraud))
    assert response.status_code == 200
    assert len(response.json()["outputs"][0]["data"]) == 2
