"""The OpenAPI 3.1 document served at /openapi.json. A test checks it against the
app's routes and the answers it actually gives."""

from __future__ import annotations

from functools import cache
from typing import Any

from receiver import __version__
from receiver.core import json_depth
from receiver.jobs import api

_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}
_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_JOB: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status", "registered", "first_seen_at", "updated_at"],
    "properties": {
        "id": {"type": "string"},
        "service": _NULLABLE_STRING,
        "type": _NULLABLE_STRING,
        "status": {"type": "string", "description": "submitted, processing, completed, failed, or as received"},
        "url": _NULLABLE_STRING,
        "duration": {"type": ["number", "null"]},
        "width": {"type": ["integer", "null"]},
        "height": {"type": ["integer", "null"]},
        "metadata": {"type": ["object", "null"]},
        "created_at": _NULLABLE_TIME,
        "completed_at": _NULLABLE_TIME,
        "first_seen_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "client_reference": _NULLABLE_STRING,
        "tags": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
        "credit_cost": {"type": ["integer", "null"]},
        "input": {"type": ["object", "null"]},
        "registered": {"type": "boolean"},
        "registered_at": _NULLABLE_TIME,
    },
}
_HISTORY_ITEM = {
    "type": "object",
    "required": ["seq", "received_at", "source", "status", "applied"],
    "properties": {
        "seq": {"type": "integer"},
        "received_at": {"type": "string", "format": "date-time"},
        "source": {"type": "string", "enum": ["webhook", "poll", "api"]},
        "status": {"type": "string"},
        "previous_status": _NULLABLE_STRING,
        "applied": {"type": "boolean"},
        "event_id": _NULLABLE_STRING,
        "event_type": _NULLABLE_STRING,
    },
}
_JOB_WITH_HISTORY = {
    "type": "object",
    "required": [*_JOB["required"], "history"],
    "properties": {
        **_JOB["properties"],
        "history": {"type": "array", "items": _HISTORY_ITEM},
    },
}
_NO_NUL = "^[^\\u0000]*$"


def _optional(schema: dict[str, Any], description: str = "optional") -> dict[str, Any]:
    """An optional registration field: null leaves what is stored, as a missing field does."""
    return {**schema, "type": [schema["type"], "null"], "description": f"{description}; null is the same as absent"}


def _text(max_length: int) -> dict[str, Any]:
    return {"type": "string", "pattern": _NO_NUL, "minLength": 1, "maxLength": max_length}


_REGISTRATION = {
    "type": "object",
    "required": ["id"],
    "additionalProperties": False,
    "description": f"at most RECEIVER_MAX_BODY_BYTES (413 beyond it), nesting at most {json_depth.MAX_DEPTH} levels",
    "properties": {
        "id": {**_text(api.MAX_LENGTH["id"]), "description": "the provider's job id"},
        "service": _optional(_text(api.MAX_LENGTH["service"])),
        "type": _optional(_text(api.MAX_LENGTH["type"])),
        "client_reference": _optional(_text(api.MAX_LENGTH["client_reference"])),
        "tags": _optional(
            {
                "type": "object",
                "maxProperties": api.MAX_TAGS,
                "propertyNames": {"pattern": _NO_NUL, "maxLength": api.MAX_TAG_KEY_LENGTH},
                "additionalProperties": {"type": "string", "pattern": _NO_NUL, "maxLength": api.MAX_TAG_VALUE_LENGTH},
            }
        ),
        "credit_cost": _optional({"type": "integer", "minimum": 0, "maximum": 1000000000}),
        "input": _optional({"type": "object"}, "free-form; NUL characters in strings become U+FFFD"),
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_AUTH_ERRORS = {
    "401": _json(_ERROR, "missing or wrong bearer token"),
    "404": _json(_ERROR, "not found (or the API is off: RECEIVER_API_TOKEN unset)"),
    "503": _json(_ERROR, "database unavailable; retry"),
}


@cache
def document() -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "doitong-receiver", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Job": _JOB, "Error": _ERROR},
        },
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Register a job submitted to the provider",
                    "security": bearer,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _REGISTRATION}}},
                    "responses": {
                        "201": _json(_JOB, "registered"),
                        "200": _json(_JOB, "already known: the registration was merged into it"),
                        "400": _json(_ERROR, "invalid body (or the caller hung up mid-body: client_disconnected)"),
                        "413": _json(
                            {**_ERROR, "properties": {**_ERROR["properties"], "limit_bytes": {"type": "integer"}}},
                            "body larger than RECEIVER_MAX_BODY_BYTES",
                        ),
                        **_AUTH_ERRORS,
                    },
                },
                "get": {
                    "summary": "List jobs, newest first, with cursor pagination",
                    "security": bearer,
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"type": "string"}},
                        {"name": "service", "in": "query", "schema": {"type": "string"}},
                        {"name": "client_reference", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "since",
                            "in": "query",
                            "description": "first seen at or after: ISO-8601 time or a duration ago (24h)",
                            "schema": {"type": "string", "pattern": api.SINCE_PATTERN},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": api.MAX_LIMIT,
                                "default": api.DEFAULT_LIMIT,
                            },
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "description": "next_cursor from the previous page; anything else is a 400",
                            "schema": {
                                "type": "string",
                                "pattern": "^[A-Za-z0-9_-]+$",
                                "maxLength": api.MAX_CURSOR_LENGTH,
                            },
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["jobs", "next_cursor"],
                                "properties": {
                                    "jobs": {"type": "array", "items": _JOB},
                                    "next_cursor": _NULLABLE_STRING,
                                },
                            },
                            "a page of jobs; pass next_cursor back for the next page",
                        ),
                        "400": _json(_ERROR, "invalid parameter"),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "One job and its history",
                    "security": bearer,
                    "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json(_JOB_WITH_HISTORY, "the job with every reported status"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"}, "up")}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: database reachable, schema at head or newer, endpoints loaded",
                    "responses": {
                        "200": _json(
                            {"type": "object"}, "ready (with a note when the schema is newer than this release)"
                        ),
                        "503": _json({"type": "object"}, "not ready, with a reason"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition", "content": {"text/plain": {}}}},
                }
            },
        },
    }
