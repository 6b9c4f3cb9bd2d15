"""Finding jobs: the one query behind `GET /v1/jobs` and the console's Jobs page.

Newest first by (first_seen_at, id). A page goes on from a cursor, the last (first_seen_at, id)
pair the previous page showed, so every page costs one walk of ix_jobs_first_seen_at_id from
where the last one stopped, however deep it is (an OFFSET would walk every row before it).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from receiver.core import base64url, tables
from receiver.core.errors import ReceiverError

# Longer than any cursor this module issues: base64url of ["<time>", "<id of 255 characters>"],
# each character at most 6 bytes once JSON-escaped.
MAX_CURSOR_LENGTH = 2200
MAX_ID_LENGTH = 255
JOB_COLUMNS = [c for c in tables.jobs.c if c.name not in ("last_polled_at",)]  # bookkeeping, not part of the job


class InvalidCursor(ReceiverError):
    """A cursor this module did not issue."""


Cursor = tuple[datetime, str]


@dataclass(frozen=True, slots=True)
class Filters:
    """What to look for; None matches anything. Every value must have been checked by the caller
    (lengths, no NUL): they go into SQL as bound parameters."""

    job_id: str | None = None
    status: str | None = None
    service: str | None = None
    client_reference: str | None = None
    tags: dict[str, str] | None = None  # each key=value must be among the job's tags
    since: datetime | None = None  # first seen at or after
    until: datetime | None = None  # first seen before


def query(filters: Filters, *, limit: int, after: Cursor | None = None, columns: Any = None) -> sa.Select[Any]:
    """Up to `limit` + 1 jobs matching `filters`, newest first, older than `after` when given
    (the extra row tells whether there is a next page: see `page`)."""
    j = tables.jobs
    selected = sa.select(*(columns if columns is not None else JOB_COLUMNS))
    statement = selected.order_by(j.c.first_seen_at.desc(), j.c.id.desc()).limit(limit + 1)
    for name, value in (
        ("id", filters.job_id),
        ("status", filters.status),
        ("service", filters.service),
        ("client_reference", filters.client_reference),
    ):
        if value is not None:
            statement = statement.where(j.c[name] == value)
    if filters.tags:
        statement = statement.where(j.c.tags.contains(filters.tags))
    if filters.since is not None:
        statement = statement.where(j.c.first_seen_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(j.c.first_seen_at < filters.until)
    if after is not None:
        seen_at, last_id = after
        statement = statement.where(sa.tuple_(j.c.first_seen_at, j.c.id) < sa.tuple_(sa.literal(seen_at), last_id))
    return statement


def page(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """The rows to show of what `query` returned, and the cursor of the next page (None: last page)."""
    shown, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(shown[-1]["first_seen_at"], shown[-1]["id"]) if more and shown else None
    return shown, next_cursor


def encode_cursor(seen_at: datetime, job_id: str) -> str:
    raw = orjson.dumps([seen_at.isoformat(), job_id])
    return base64url.encode(raw)


def decode_cursor(cursor: str) -> Cursor:
    """The cursor's (first_seen_at, id), each checked as a query parameter would be: its shape
    alone does not make it one we issued."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor(cursor[:20])
    try:
        raw = base64url.decode(cursor)
        seen_at, job_id = orjson.loads(raw)
        moment = datetime.fromisoformat(seen_at)
        moment_utc = moment.astimezone(UTC)
    except (binascii.Error, ValueError, TypeError, OverflowError, orjson.JSONDecodeError):
        raise InvalidCursor(cursor[:20]) from None
    if not isinstance(job_id, str) or moment.tzinfo is None:
        raise InvalidCursor(cursor[:20])
    if not 1 <= len(job_id) <= MAX_ID_LENGTH or "\x00" in job_id:
        raise InvalidCursor(cursor[:20])  # never an id we store: PostgreSQL refuses NUL in text (a 500 once)
    return moment_utc, job_id


async def counts(conn: Any, since: datetime) -> list[tuple[str | None, str, int]]:
    """(service, status, jobs) of the jobs first seen since the minute of `since`, most jobs first:
    from job_minutes (receiver/core/minutes.py), a row per key and minute, not one per job."""
    m = tables.job_minutes
    jobs = sa.func.sum(m.c.jobs)
    rows = await conn.execute(
        sa.select(m.c.service, m.c.status, jobs)
        .where(m.c.minute >= since.replace(second=0, microsecond=0))
        .group_by(m.c.service, m.c.status)
        .having(jobs > 0)
        .order_by(jobs.desc())
    )
    return [(row[0] or None, row[1], int(row[2])) for row in rows]
