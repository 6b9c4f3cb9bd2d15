"""Operational events: the receiver's news about itself, through the same outbox, signing and
retries as job events.

| type | subject | emitted by |
|---|---|---|
| operational.subscriber_disabled | subscriber:<id> | auto-disable (subscriber health), 410 Gone (outbox.disable_gone) |
| operational.circuit_opened / operational.circuit_closed | subscriber:<id> | the circuit breaker |
| operational.delivery_dead | subscriber:<id> | PostgreSQL, when any statement makes a delivery of a job event dead |
| operational.endpoint_forged_signatures | endpoint:<name> | forgeries.py, once per burst window |
| operational.jobs_stale | jobs | `watch_unresolved_jobs`, once per occasion |

Each is `{"id", "type", "timestamp", "data"}` like a job event; `data` names what it is about
(`subscriber_id` and `url`, or `endpoint`) and what happened.

`emit` writes one in the caller's transaction, so the event exists exactly when what it reports
was committed. `emit_once` is for a condition that lasts: whichever process gets there first
emits, and nobody again until the window has passed (operational_marks).

Who receives them is decided in SQL (receiver_delivers() in receiver/sql/operational.sql, which
the fan-out and replay call): only a subscription whose event types name the type or
`operational.*`, never one without a filter, and never one about the subscriber itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import orjson
import psycopg
import sqlalchemy as sa
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncConnection as SaConnection

from receiver.core import metrics
from receiver.jobs import reconcile

log = logging.getLogger("receiver.outbound.operational")

OperationalType = Literal[
    "operational.subscriber_disabled",
    "operational.circuit_opened",
    "operational.circuit_closed",
    "operational.delivery_dead",
    "operational.endpoint_forged_signatures",
    "operational.jobs_stale",
]
TYPES: tuple[OperationalType, ...] = get_args(OperationalType)
PREFIX = "operational."
# What a subscription names to receive every operational event (stored as written).
WILDCARD = "operational.*"

# Which key of `data` names what each type is about.
_SUBJECT_KEY: dict[OperationalType, str | None] = {
    "operational.subscriber_disabled": "subscriber_id",
    "operational.circuit_opened": "subscriber_id",
    "operational.circuit_closed": "subscriber_id",
    "operational.delivery_dead": "subscriber_id",
    "operational.endpoint_forged_signatures": "endpoint",
    "operational.jobs_stale": None,
}
_SUBJECT_PREFIX = {"subscriber_id": "subscriber:", "endpoint": "endpoint:"}

Connection = psycopg.AsyncConnection[Any] | SaConnection

_EMIT = "SELECT receiver_operational_event(%(type)s, %(subject)s, %(data)s::jsonb)"
_EMIT_SA = sa.text("SELECT receiver_operational_event(:type, :subject, CAST(:data AS jsonb))")

# The window's claim: the row lock serialises processes that get here together, and the one
# that comes second sees the first one's emitted_at and gets no row. `covering`, when given,
# must also be later than what the last event covered (jobs_stale: newer stuck jobs).
_CLAIM_MARK = """
INSERT INTO operational_marks AS m (type, subject, emitted_at, covered_until)
VALUES (%(type)s, %(subject)s, now(), %(covering)s)
ON CONFLICT (type, subject) DO UPDATE SET emitted_at = now(), covered_until = EXCLUDED.covered_until
WHERE m.emitted_at <= now() - %(window)s
  AND (%(covering)s::timestamptz IS NULL OR m.covered_until IS NULL OR m.covered_until < %(covering)s)
RETURNING 1
"""


def subject(event_type: OperationalType, data: Mapping[str, object]) -> str:
    """What an event of `event_type` with `data` is about, as outbox_events.subject."""
    key = _SUBJECT_KEY[event_type]
    if key is None:
        return "jobs"
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{event_type} needs data[{key!r}], the {key.replace('_', ' ')} it is about")
    return _SUBJECT_PREFIX[key] + value


async def emit(conn: Connection, event_type: OperationalType, data: Mapping[str, object], /) -> uuid.UUID:
    """Enqueue an operational event in `conn`'s current transaction; returns its id.

    `data` must name what it is about: `subscriber_id` (and `url`) for the subscriber types,
    `endpoint` for endpoint_forged_signatures. Works on a psycopg or a SQLAlchemy connection."""
    if event_type not in _SUBJECT_KEY:
        raise ValueError(f"{event_type!r} is not an operational event type; one of {', '.join(TYPES)}")
    params = {"type": event_type, "subject": subject(event_type, data), "data": orjson.dumps(dict(data)).decode()}
    if isinstance(conn, psycopg.AsyncConnection):
        row = await (await conn.execute(_EMIT, params)).fetchone()
    else:
        row = (await conn.execute(_EMIT_SA, params)).first()
    assert row is not None
    event_id: uuid.UUID = row[0]
    fields = {**_loggable(data), "operational_event_id": str(event_id)}  # data may name an event_id of its own
    log.info("operational event %s", event_type, extra={"fields": fields})
    return event_id


async def emit_once(
    conn: psycopg.AsyncConnection[Any],
    event_type: OperationalType,
    data: Mapping[str, object],
    *,
    window: timedelta,
    covering: datetime | None = None,
) -> uuid.UUID | None:
    """Emit unless an event of this type about the same subject was emitted by any process in
    the last `window` (or, with `covering`, unless the last one covered as much already).
    Returns the event id, or None when it was not emitted. Call it in a transaction: the mark
    and the event commit together."""
    claimed = await conn.execute(
        _CLAIM_MARK,
        {"type": event_type, "subject": subject(event_type, data), "window": window, "covering": covering},
    )
    if await claimed.fetchone() is None:
        return None
    return await emit(conn, event_type, data)


def _loggable(data: Mapping[str, object]) -> dict[str, object]:
    # The event's own fields in the log line, minus any that would make it long.
    return {k: v for k, v in data.items() if isinstance(v, int | float | str | None) and len(str(v)) <= 200}


# -- jobs nobody can resolve ---------------------------------------------------------------------


async def report_unresolved_jobs(conn: psycopg.AsyncConnection[Any], *, after: timedelta) -> uuid.UUID | None:
    """Emit `operational.jobs_stale` when reconciliation has asked Doitong about jobs and they
    are still unfinished `after` their last change; once per occasion: again only when newer
    jobs have joined them, and not within `after` of the last one. Sets the gauges."""
    async with conn.transaction():
        found = await reconcile.unresolved(conn, after=after)
        metrics.JOBS_UNRESOLVED.set(found.count)
        metrics.JOBS_UNRESOLVED_OLDEST.set(found.oldest_seconds)
        if not found.count or found.newest_change is None:
            return None
        return await emit_once(
            conn,
            "operational.jobs_stale",
            {
                "count": found.count,
                "unresolved_after": int(after.total_seconds()),
                "oldest_job_ids": found.oldest_job_ids,
                "oldest_change": found.oldest_change,
            },
            window=after,
            covering=found.newest_change,
        )


async def watch_unresolved_jobs(
    pool: AsyncConnectionPool, *, after: timedelta, interval: timedelta, stop: asyncio.Event
) -> None:
    """`report_unresolved_jobs` every `interval` until `stop` (beside the reconciler)."""
    while not stop.is_set():
        try:
            async with pool.connection() as conn:
                await report_unresolved_jobs(conn, after=after)
        except (psycopg.Error, OSError) as exc:
            log.warning("checking for unresolved jobs failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval.total_seconds())
