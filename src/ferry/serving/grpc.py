"""gRPC transport: the Open Inference Protocol V2 service (``inference.GRPCInferenceService``).

It converts protobuf to the data plane's V2 dicts and back and calls only the data plane.
Tensor data arrives either typed (``InferTensorContents``, one repeated field per datatype) or
raw (``raw_input_contents``: little-endian bytes per input, BYTES elements each prefixed by
a 4-byte length); raw byte counts are checked against the declared shape before any decoding.
A request sent raw is answered raw (``raw_output_contents``), as Triton's clients expect; any
other is answered with typed contents. Every error is a status from ``GRPC_STATUS`` with the
error's message; unexpected exceptions are logged and answered ``INTERNAL: internal error``.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np

from ferry.core.protocol import DATATYPES
from ferry.errors import ErrorCode, FerryError, SignatureError
from ferry.serving.auth import TokenAuth
from ferry.serving.dataplane import DataPlane
from ferry.serving.proto import grpc_predict_v2_pb2 as pb
from ferry.serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

log = logging.getLogger("ferry.serving.grpc")

GRPC_STATUS = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024

# The InferTensorContents field that carries each datatype. FP16 has none: raw only.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LENGTH = struct.Struct("<I")
_LITTLE = {name: dtype.newbyteorder("<") for name, dtype in DATATYPES.items() if name != "BYTES"}


# --- protobuf -> data plane -------------------------------------------------------------


def _datatype(name: str, datatype: str) -> str:
    if datatype not in DATATYPES:
        raise SignatureError(
            f"input {name!r}: unknown datatype {datatype!r}; use one of {sorted(DATATYPES)}"
        )
    return datatype


def _count(name: str, shape: list[int]) -> int:
    if any(d < 0 for d in shape):
        raise SignatureError(
            f"input {name!r}: shape {shape} has a negative dimension; send the actual sizes"
        )
    return math.prod(shape)


def _element(value: bytes) -> str | bytes:
    """A BYTES element: text when it is UTF-8, else the bytes themselves (an encoded image,
    as Triton clients send it); string inputs refuse bytes in ``serving.inputs``."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


def _typed_data(tensor: Any) -> list[Any]:
    name, datatype = tensor.name, _datatype(tensor.name, tensor.datatype)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise SignatureError(
            f"input {name!r}: {datatype} has no typed contents field; send it in "
            "raw_input_contents (little-endian)"
        )
    sent = [f.name for f, _ in tensor.contents.ListFields()]
    if sent and sent != [field]:
        raise SignatureError(
            f"input {name!r}: datatype {datatype} is carried in contents.{field}, but the "
            f"request filled {sent}; fill {field} or change the datatype"
        )
    values = getattr(tensor.contents, field)
    if datatype == "BYTES":
        return [_element(v) for v in values]
    return list(values)


def _split_bytes(name: str, raw: bytes, count: int) -> list[str | bytes]:
    if count * _LENGTH.size > len(raw):
        raise SignatureError(
            f"input {name!r}: {count} BYTES elements need at least {count * _LENGTH.size} "
            f"bytes of raw_input_contents (a 4-byte length each), got {len(raw)}"
        )
    values: list[str | bytes] = []
    offset, end = 0, len(raw)
    for index in range(count):
        start = offset + _LENGTH.size
        if start <= end:
            offset = start + _LENGTH.unpack_from(raw, offset)[0]
        if start > end or offset > end:
            raise SignatureError(
                f"input {name!r}: raw BYTES element {index} runs past the end of "
                "raw_input_contents; prefix each element with its 4-byte little-endian length"
            )
        values.append(_element(raw[start:offset]))
    if offset != len(raw):
        raise SignatureError(
            f"input {name!r}: raw_input_contents has {len(raw) - offset} bytes after the "
            f"{count} BYTES elements the shape declares"
        )
    return values


def _raw_data(tensor: Any, raw: bytes) -> list[Any] | np.ndarray:
    name, datatype = tensor.name, _datatype(tensor.name, tensor.datatype)
    count = _count(name, list(tensor.shape))
    if datatype == "BYTES":
        return _split_bytes(name, raw, count)
    dtype = _LITTLE[datatype]
    if len(raw) != count * dtype.itemsize:
        raise SignatureError(
            f"input {name!r}: shape {list(tensor.shape)} of {datatype} needs "
            f"{count * dtype.itemsize} bytes of raw_input_contents, got {len(raw)}"
        )
    if datatype == "BOOL":
        return np.frombuffer(raw, dtype=np.uint8) != 0
    # The data plane takes arrays as they are: no per-element conversion on the hot path.
    return np.frombuffer(raw, dtype=dtype)


def _parameters(params: Any) -> dict[str, Any]:
    out = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, which) if which else None
    return out


def request_to_v2(request: Any) -> dict[str, Any]:
    """A ``ModelInferRequest`` as the data plane's V2 request dict."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise SignatureError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, in the order of inputs"
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        if raw and tensor.HasField("contents"):
            raise SignatureError(
                f"input {tensor.name!r}: contents and raw_input_contents are both set; "
                "use one of them for all inputs"
            )
        data = _raw_data(tensor, raw[i]) if raw else _typed_data(tensor)
        inputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "data": data,
            }
        )
    v2: dict[str, Any] = {"inputs": inputs}
    if request.outputs:
        v2["outputs"] = [{"name": o.name} for o in request.outputs]
    if request.id:
        v2["id"] = request.id
    if request.parameters:
        v2["parameters"] = _parameters(request.parameters)
    return v2


# --- data plane -> protobuf -------------------------------------------------------------


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else str(value)).encode()


def _raw_bytes(datatype: str, data: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(b)) + b for b in map(_as_bytes, data))
    return np.asarray(data, dtype=_LITTLE[datatype]).tobytes()


def _fill_param(param: Any, value: object) -> None:
    if value is None:  # a parameter sent with no value is echoed with none
        return
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int) and -(2**63) <= value < 2**63:
        param.int64_param = value
    elif isinstance(value, int) and 0 <= value < 2**64:
        param.uint64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = value if isinstance(value, str) else str(value)


def response_from_v2(v2: Mapping[str, Any], raw: bool) -> Any:
    """The data plane's V2 response dict as a ``ModelInferResponse`` (raw or typed contents)."""
    response = pb.ModelInferResponse(
        model_name=v2["model_name"], model_version=v2["model_version"], id=v2.get("id", "")
    )
    outputs = v2["outputs"]
    raw = raw or any(o["datatype"] not in CONTENTS_FIELD for o in outputs)  # FP16: raw only
    for out in outputs:
        tensor = response.outputs.add(
            name=out["name"], datatype=out["datatype"], shape=out["shape"]
        )
        if raw:
            response.raw_output_contents.append(_raw_bytes(out["datatype"], out["data"]))
        elif out["datatype"] == "BYTES":
            tensor.contents.bytes_contents.extend(map(_as_bytes, out["data"]))
        else:
            getattr(tensor.contents, CONTENTS_FIELD[out["datatype"]]).extend(out["data"])
    for key, value in (v2.get("parameters") or {}).items():
        _fill_param(response.parameters[key], value)
    return response


def _metadata_response(meta: Mapping[str, Any]) -> Any:
    def tensors(items: list[Mapping[str, Any]]) -> list[Any]:
        return [
            pb.ModelMetadataResponse.TensorMetadata(
                name=t["name"],
                datatype=t["datatype"],
                shape=[-1 if d is None else d for d in t["shape"]],
            )
            for t in items
        ]

    return pb.ModelMetadataResponse(
        name=meta["name"],
        versions=meta.get("versions", []),
        platform=meta.get("platform", ""),
        inputs=tensors(meta.get("inputs", [])),
        outputs=tensors(meta.get("outputs", [])),
    )


# --- service ----------------------------------------------------------------------------

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[["InferenceServicer", Req, Any], Awaitable[Resp]]


def _rpc(scope: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Check the bearer token for ``scope``, then map errors to statuses; never leak internals."""

    def wrap(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        async def rpc(self: InferenceServicer, request: Req, context: Any) -> Resp:
            try:
                self.authorize(context, scope)
                return await handler(self, request, context)
            except FerryError as exc:
                error = exc
            except Exception:
                log.exception("unhandled error in gRPC %s", handler.__name__)
                error = FerryError("internal error")
            await _abort(context, error)
            raise AssertionError("unreachable: abort raises")

        rpc.__name__ = handler.__name__
        return rpc

    return wrap


def _status_name(context: Any) -> str:
    try:
        code = context.code()
    except Exception:  # older grpc.aio contexts have no code(); the status is then unknown
        code = None
    return code.name if code is not None else "UNKNOWN"


async def _abort(context: Any, exc: FerryError) -> None:
    trailers: tuple[tuple[str, str], ...] = ()
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        trailers = (("retry-after", str(retry)),)
    await context.abort(GRPC_STATUS.get(exc.code, grpc.StatusCode.INTERNAL), exc.message, trailers)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane, auth: TokenAuth | None = None) -> None:
        self.plane = plane
        self.auth = auth or TokenAuth()
        self._tokens = bool(self.auth.predict_tokens or self.auth.admin_tokens)

    def authorize(self, context: Any, scope: str) -> None:
        header = None
        if self._tokens and scope != "public":
            for key, value in context.invocation_metadata() or ():
                if key == "authorization":
                    header = value
        self.auth.check(header, scope)

    @_rpc("public")
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.plane.live())

    @_rpc("public")
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.plane.ready())

    @_rpc("predict")
    async def ModelReady(self, request: Any, context: Any) -> Any:
        ready = self.plane.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    @_rpc("predict")
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        meta = self.plane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta.get("extensions", [])
        )

    @_rpc("predict")
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        meta = self.plane.model_metadata(request.name, request.version or None)
        return _metadata_response(meta)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        status = "OK"
        self.plane.observe_in_flight(request.model_name, 1)
        try:
            return await self._infer(request, context)
        except BaseException:
            status = _status_name(context)
            raise
        finally:
            self.plane.observe_in_flight(request.model_name, -1)
            self.plane.observe_request(
                "grpc", request.model_name, status, time.perf_counter() - started
            )

    @_rpc("predict")
    async def _infer(self, request: Any, context: Any) -> Any:
        v2 = request_to_v2(request)
        result = await self.plane.infer(
            request.model_name, request.model_version or None, v2, protocol="grpc"
        )
        return response_from_v2(result, raw=bool(request.raw_input_contents))


def build_grpc_server(
    plane: DataPlane,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    auth: TokenAuth | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE,
) -> tuple[grpc.aio.Server, int]:
    """An unstarted ``grpc.aio`` server bound to ``host:port`` (0: any free port), and the port.

    Call it on the event loop that will run the server (a ``grpc.aio`` server belongs to the
    loop it was built on); the caller awaits ``server.start()`` and ``server.stop(grace)``.
    ``SO_REUSEPORT`` is on so several worker processes can share the port.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 1),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(plane, auth), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise FerryError(
            f"cannot bind gRPC to {address}: {exc}; pick a free port or another host",
            code=ErrorCode.UNAVAILABLE,
        ) from exc
    if not bound:
        raise FerryError(
            f"cannot bind gRPC to {address}; pick a free port or another host",
            code=ErrorCode.UNAVAILABLE,
        )
    return server, bound
