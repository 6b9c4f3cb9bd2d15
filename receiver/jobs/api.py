"""The job API: register jobs submitted through us and read any job with its history.

`POST /v1/jobs`, `GET /v1/jobs/{id}`, `GET /v1/jobs?status=&service=&client_reference=&since=&limit=&cursor=`.
Every call needs `Authorization: Bearer $RECEIVER_API_TOKEN` (compared in
constant time). Without a configured token the routes answer 404, as if they
did not exist.

Every limit below is also in /openapi.json (receiver/jobs/openapi.py reads them from here), and
every value from a request is checked before it reaches SQL: a test runs schemathesis with all
its checks against the document.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from receiver.core import bodies, db, durations, json_depth, metrics, tables
from receiver.core.errors import BodyTooLarge, ClientGone, ConfigError, DatabaseUnavailable, ReceiverError
from receiver.inbound.state import AppState, json_response
from receiver.jobs import history, registration, search

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
MAX_LENGTH = {"id": 255, "service": 64, "type": 64, "client_reference": 255}
MAX_TAGS = 50
MAX_TAG_KEY_LENGTH = 64
MAX_TAG_VALUE_LENGTH = 255
MAX_CURSOR_LENGTH = search.MAX_CURSOR_LENGTH  # in /openapi.json
# What `since` accepts, in /openapi.json too, so that every value the pattern admits is a time
# this API can use: real calendar dates (no 0000-00-00, no 30 February), hours below 24, and
# [0-9] rather than \d, which matches other scripts' digits in Python.
_YEAR = "(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
_MONTH_DAY = "((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)"
_LEAP_DAY = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)-02-29"
_TIME = r"[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?"
_DURATION = r"([0-9]+(\.[0-9]+)?(ms|d|h|m|s))+"
SINCE_PATTERN = f"^(?:(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_DAY})(?:{_TIME})?|{_DURATION})$"
_SINCE = re.compile(SINCE_PATTERN)
_IS_DURATION = re.compile(_DURATION)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_JOB_COLUMNS = search.JOB_COLUMNS


class BadRequest(ReceiverError):
    """A request the API refuses with 400; the message says what to change."""


async def jobs(request: Request) -> Response:
    """/v1/jobs: one route for both methods, so that a 405 (and OPTIONS) lists both in `Allow`."""
    return await (list_jobs(request) if request.method in ("GET", "HEAD") else register(request))


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
    limit = state.settings.max_body_bytes
    try:
        job = _registration(await bodies.read_limited(request.receive, request.headers.get("content-length"), limit))
    except BodyTooLarge:
        return json_response({"error": "body_too_large", "limit_bytes": limit}, 413)
    except ClientGone:
        # The caller hung up mid-body: nothing registered, nobody left to read this.
        return json_response({"error": "client_disconnected"}, 400)
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
    try:
        limit = _limit(params.get("limit"))
        since = params.get("since")
        filters = search.Filters(
            status=params.get("status"),
            service=params.get("service"),
            client_reference=params.get("client_reference"),
            since=_since(since) if since is not None else None,
        )
        cursor = params.get("cursor")
        query = search.query(filters, limit=limit, after=_decode_cursor(cursor) if cursor is not None else None)
    except BadRequest as exc:
        return json_response({"error": "invalid_request", "detail": str(exc)}, 400)
    try:
        async with db.begin(state.engine) as conn:
            rows = [dict(row._mapping) for row in await conn.execute(query)]
    except DatabaseUnavailable:
        return _unavailable(state)
    page, next_cursor = search.page(rows, limit)
    return json_response({"jobs": [_jsonable(r) for r in page], "next_cursor": next_cursor}, 200)


def _registration(body: bytes) -> registration.Registration:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BadRequest("body is not a JSON object")
    # Before `input` is walked or serialised again: orjson parses deeper than it writes.
    if json_depth.deeper_than(document, raw=body):
        raise BadRequest(f"body nests deeper than {json_depth.MAX_DEPTH} levels of objects and arrays")
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
        if isinstance(value, str) and not 1 <= len(value) <= MAX_LENGTH[name]:
            raise BadRequest(f"`{name}` must be 1 to {MAX_LENGTH[name]} characters")
        if isinstance(value, str) and "\x00" in value:
            raise BadRequest(f"`{name}` cannot contain NUL characters")
        job[name] = value
    if job["id"] is None:
        raise BadRequest("`id` is required: the provider's job id")
    tags = job["tags"]
    if tags is not None:
        _check_tags(tags)
    if job["credit_cost"] is not None and not 0 <= job["credit_cost"] <= 10**9:
        raise BadRequest("`credit_cost` must be between 0 and 1000000000")
    return registration.Registration(
        id=job["id"],
        service=job["service"],
        type=job["type"],
        client_reference=job["client_reference"],
        tags=tags,
        credit_cost=job["credit_cost"],
        input=None if job["input"] is None else _without_nul(job["input"]),
    )


def _check_tags(tags: dict[str, Any]) -> None:
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"`tags` has {len(tags)} entries; at most {MAX_TAGS}")
    for key, value in tags.items():
        if not isinstance(value, str):
            raise BadRequest(f"`tags` values must be strings (`{key[:MAX_TAG_KEY_LENGTH]}` is not)")
        if len(key) > MAX_TAG_KEY_LENGTH:
            raise BadRequest(f"`tags` keys must be at most {MAX_TAG_KEY_LENGTH} characters")
        if len(value) > MAX_TAG_VALUE_LENGTH:
            raise BadRequest(f"`tags` values must be at most {MAX_TAG_VALUE_LENGTH} characters")
        if "\x00" in key or "\x00" in value:
            raise BadRequest("`tags` cannot contain NUL characters")


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
    return [
        _jsonable(
            {
                "seq": r.seq,
                "received_at": r.received_at,
                "source": r.source,
                "status": r.status,
                "previous_status": r.previous_status,
                "applied": r.applied,
                "event_id": r.event_id,
                "event_type": r.event_type,
            }
        )
        for r in await history.reports(conn, job_id)
    ]


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
    """The moment `since` names; every value SINCE_PATTERN admits is one (see /openapi.json)."""
    if _SINCE.fullmatch(text) is None:
        raise BadRequest("`since` must be an ISO-8601 time such as 2024-05-01T12:00:00Z or a duration such as 24h")
    if _IS_DURATION.fullmatch(text) is None:
        moment = datetime.fromisoformat(text)  # the pattern admits only what this reads
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        return datetime.now(UTC) - durations.parse(text, setting="since")
    except ConfigError:
        # The pattern let it through, so it is only too long (durations stop at 100 years): since
        # that long ago is every job there is.
        return _EARLIEST


def _decode_cursor(cursor: str) -> search.Cursor:
    try:
        return search.decode_cursor(cursor)
    except search.InvalidCursor:
        raise BadRequest("`cursor` is not one this API returned") from None
