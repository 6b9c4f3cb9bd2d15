"""The job API: register jobs submitted through us and read any job with its history.

`POST /v1/jobs`, `GET /v1/jobs/{id}`, `GET /v1/jobs?status=&service=&client_reference=&since=&limit=&cursor=`.
Every call needs `Authorization: Bearer $RECEIVER_API_TOKEN` (compared in
constant time). Without a configured token the routes answer 404, as if they
did not exist.
"""

from __future__ import annotations

import binascii
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from receiver.core import base64url, db, durations, metrics, tables
from receiver.core.errors import ConfigError, DatabaseUnavailable
from receiver.inbound.state import AppState, json_response
from receiver.jobs import registration

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
_FIELDS = {
    "id": str,
    "service": str,
    "type": str,
    "client_reference": str,
    "tags": dict,
    "credit_cost": int,
    "input": dict,
}
_MAX_LENGTH = {"id": 255, "service": 64, "type": 64, "client_reference": 255}
_JOB_COLUMNS = [
    c
    for c in tables.jobs.c
    if c.name not in ("last_polled_at",)  # bookkeeping, not part of the job
]


class BadRequest(Exception):
    pass


def _guard(request: Request) -> Response | None:
    """404 when the API is off, 401 without the right token, None when the call may go on."""
    state: AppState = request.app.state.receiver
    token = state.settings.api_token
    if token is None:
        return json_response({"error": "not_found"}, 404)
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return json_response({"error": "unauthorized"}, 401, headers={"WWW-Authenticate": "Bearer"})
    return None


async def register(request: Request) -> Response:
    if (refused := _guard(request)) is not None:
        return refused
    state: AppState = request.app.state.receiver
    try:
        job = _registration(await request.body())
    except BadRequest as exc:
        return json_response({"error": "invalid_request", "detail": str(exc)}, 400)
    try:
        async with db.begin(state.engine) as conn:
            registered = await registration.register(conn, job)
            stored = await _job(conn, job["id"])
    except DatabaseUnavailable:
        return _unavailable(state)
    metrics.REGISTRATIONS.labels("created" if registered.created else "merged").inc()
    assert stored is not None
    return json_response(stored, 201 if registered.created else 200)


async def get_job(request: Request) -> Response:
    if (refused := _guard(request)) is not None:
        return refused
    state: AppState = request.app.state.receiver
    job_id = request.path_params["job_id"]
    if "\x00" in job_id:
        return json_response({"error": "not_found"}, 404)
    try:
        async with db.begin(state.engine) as conn:
            job = await _job(conn, job_id)
            if job is None:
                return json_response({"error": "not_found"}, 404)
            job["history"] = await _history(conn, job_id)
    except DatabaseUnavailable:
        return _unavailable(state)
    return json_response(job, 200)


async def list_jobs(request: Request) -> Response:
    if (refused := _guard(request)) is not None:
        return refused
    state: AppState = request.app.state.receiver
    params = request.query_params
    if any("\x00" in value for value in params.values()):
        return json_response({"error": "invalid_request", "detail": "parameters cannot contain NUL"}, 400)
    j = tables.jobs
    try:
        limit = _limit(params.get("limit"))
        query = sa.select(*_JOB_COLUMNS).order_by(j.c.first_seen_at.desc(), j.c.id.desc()).limit(limit + 1)
        for name in ("status", "service", "client_reference"):
            if (value := params.get(name)) is not None:
                query = query.where(j.c[name] == value)
        if (since := params.get("since")) is not None:
            query = query.where(j.c.first_seen_at >= _since(since))
        if (cursor := params.get("cursor")) is not None:
            seen_at, last_id = _decode_cursor(cursor)
            query = query.where(sa.tuple_(j.c.first_seen_at, j.c.id) < sa.tuple_(sa.literal(seen_at), last_id))
    except BadRequest as exc:
        return json_response({"error": "invalid_request", "detail": str(exc)}, 400)
    try:
        async with db.begin(state.engine) as conn:
            rows = [dict(row._mapping) for row in await conn.execute(query)]
    except DatabaseUnavailable:
        return _unavailable(state)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = _encode_cursor(page[-1]["first_seen_at"], page[-1]["id"]) if more and page else None
    return json_response({"jobs": [_jsonable(r) for r in page], "next_cursor": next_cursor}, 200)


def _registration(body: bytes) -> registration.Registration:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BadRequest("body is not a JSON object")
    unknown = sorted(set(document) - set(_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    job: dict[str, Any] = {name: None for name in _FIELDS}
    for name, kind in _FIELDS.items():
        value = document.get(name)
        if value is None:
            continue
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON Schema counts 80.0 as an integer
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadRequest(f"`{name}` must be {'an object' if kind is dict else 'a ' + kind.__name__}")
        if isinstance(value, str) and not 1 <= len(value) <= _MAX_LENGTH[name]:
            raise BadRequest(f"`{name}` must be 1 to {_MAX_LENGTH[name]} characters")
        if isinstance(value, str) and "\x00" in value:
            raise BadRequest(f"`{name}` cannot contain NUL characters")
        job[name] = value
    if job["id"] is None:
        raise BadRequest("`id` is required: the provider's job id")
    tags = job["tags"]
    if tags is not None and (
        len(tags) > 50 or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    ):
        raise BadRequest("`tags` must be an object of at most 50 string values")
    if job["credit_cost"] is not None and not 0 <= job["credit_cost"] <= 10**9:
        raise BadRequest("`credit_cost` must be between 0 and 1000000000")
    if tags is not None and any("\x00" in k or "\x00" in v for k, v in tags.items()):
        raise BadRequest("`tags` cannot contain NUL characters")
    return registration.Registration(
        id=job["id"],
        service=job["service"],
        type=job["type"],
        client_reference=job["client_reference"],
        tags=tags,
        credit_cost=job["credit_cost"],
        input=None if job["input"] is None else _without_nul(job["input"]),
    )


def _without_nul(value: Any) -> Any:
    """PostgreSQL's jsonb cannot hold NUL characters: in the free-form `input` they become U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


async def _job(conn: Any, job_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(*_JOB_COLUMNS).where(tables.jobs.c.id == job_id))).first()
    return _jsonable(dict(row._mapping)) if row is not None else None


async def _history(conn: Any, job_id: str) -> list[dict[str, Any]]:
    e, o = tables.job_events, tables.outbox_events
    rows = await conn.execute(
        sa.select(
            e.c.id.label("seq"),
            e.c.received_at,
            e.c.source,
            e.c.status,
            e.c.previous_status,
            e.c.applied,
            e.c.outbox_event_id.label("event_id"),
            o.c.type.label("event_type"),
        )
        .select_from(e.outerjoin(o, o.c.id == e.c.outbox_event_id))
        .where(e.c.job_id == job_id)
        .order_by(e.c.id)
    )
    return [_jsonable(dict(row._mapping)) for row in rows]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row.items():
        key = str(name)  # SQLAlchemy hands out str subclasses, which orjson refuses as keys
        if isinstance(value, datetime):
            out[key] = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        elif value is not None and not isinstance(value, str | int | float | bool | dict | list):
            out[key] = str(value)
        else:
            out[key] = value
    return out


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"`limit` must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _unavailable(state: AppState) -> Response:
    return json_response(
        {"error": "unavailable"}, 503, headers={"Retry-After": str(state.settings.retry_after_seconds)}
    )


def _since(text: str) -> datetime:
    try:
        return durations.since(text, setting="since")
    except (ConfigError, OverflowError):
        raise BadRequest("`since` must be an ISO-8601 time or a duration such as 24h") from None


def _encode_cursor(seen_at: datetime, job_id: str) -> str:
    raw = orjson.dumps([seen_at.isoformat(), job_id])
    return base64url.encode(raw)


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64url.decode(cursor)
        seen_at, job_id = orjson.loads(raw)
        moment = datetime.fromisoformat(seen_at)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise BadRequest("`cursor` is not one this API returned") from None
    if not isinstance(job_id, str) or moment.tzinfo is None:
        raise BadRequest("`cursor` is not one this API returned")
    return moment, job_id
