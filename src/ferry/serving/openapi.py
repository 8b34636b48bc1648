"""Ferry's own OpenAPI document (the protocol's published one has broken paths)."""

from __future__ import annotations

from typing import Any

from ferry import __version__

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
                "BYTES",
            ],
        },
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}},
            },
        },
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
    },
}
_PREDICT_REQUEST = {
    "type": "object",
    "required": ["instances"],
    "properties": {"instances": {"type": "array", "items": {"type": "object"}}},
}
_PREDICT_RESPONSE = {
    "type": "object",
    "properties": {"predictions": {"type": "array", "items": {"type": "object"}}},
}
_ERRORS = {
    str(code): {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for code, text in (
        (400, "invalid request"),
        (401, "missing token"),
        (403, "wrong token"),
        (404, "unknown model or version"),
        (413, "body too large"),
        (415, "unsupported content type"),
        (503, "not ready or overloaded"),
    )
}


def _param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str, params: list[str], response: dict[str, Any], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [_param(p) for p in params],
        "responses": {"200": _json(response), **_ERRORS},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _model_paths(prefix: str, params: list[str]) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/InferRequest"}
    return {
        prefix: {"get": _op("Model metadata", params, {"type": "object"})},
        f"{prefix}/ready": {"get": _op("Model readiness", params, {"type": "object"})},
        f"{prefix}/infer": {
            "post": _op(
                "Inference (V2)", params, {"$ref": "#/components/schemas/InferResponse"}, ref
            )
        },
    }


def _metrics_op() -> dict[str, Any]:
    return {
        "summary": "Prometheus metrics",
        "parameters": [],
        "responses": {
            "200": {
                "description": "exposition text",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **_ERRORS,
        },
    }


def openapi_document(admin: bool = False) -> dict[str, Any]:
    health = {"type": "object"}
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": _op("Server liveness", [], health)},
        "/v2/health/ready": {"get": _op("Server readiness", [], health)},
        "/v2": {"get": _op("Server metadata", [], health)},
        "/openapi.json": {"get": _op("This document", [], health)},
        "/metrics": {"get": _metrics_op()},
        "/v2/models/{model}/feedback": {
            "post": _op(
                "Late labels for logged predictions",
                ["model"],
                {"type": "object"},
                {"type": "array", "items": {"type": "object", "required": ["id", "label"]}},
            )
        },
        **_model_paths("/v2/models/{model}", ["model"]),
        **_model_paths("/v2/models/{model}/versions/{version}", ["model", "version"]),
    }
    for prefix, params in (
        ("/v1/models/{model}", ["model"]),
        ("/v1/models/{model}/versions/{version}", ["model", "version"]),
    ):
        paths[prefix + ":predict"] = {
            "post": _op(
                "Predict from row records",
                params,
                {"$ref": "#/components/schemas/PredictResponse"},
                {"$ref": "#/components/schemas/PredictRequest"},
            )
        }
    if admin:
        paths["/v2/repository/index"] = {"post": _op("Repository index", [], {"type": "array"})}
        for action in ("load", "unload"):
            paths[f"/v2/repository/models/{{model}}/{action}"] = {
                "post": _op(f"Repository {action}", ["model"], {"type": "object"})
            }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Ferry inference server", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Tensor": _TENSOR,
                "InferRequest": _INFER_REQUEST,
                "InferResponse": _INFER_RESPONSE,
                "PredictRequest": _PREDICT_REQUEST,
                "PredictResponse": _PREDICT_RESPONSE,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
