"""Reading what was sent: deliveries by filter, a job's events with their deliveries and every
attempt, and each subscriber's figures. `receiver deliveries` and the console read through here.

Writing stays in outbox.py (fan-out, claim, complete, replay): this module only reads.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.core import tables

State = Literal["pending", "delivered", "dead"]
STATES: tuple[State, ...] = ("pending", "delivered", "dead")


@dataclass(frozen=True, slots=True)
class Filters:
    """Which deliveries; None matches any."""

    state: State | None = None
    subscription_id: str | None = None
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    state: str
    subscription_id: str
    event_id: uuid.UUID
    event_type: str
    job_id: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: int
    subscription_id: str
    attempt: int
    at: datetime
    duration_ms: int | None
    outcome: str  # delivered, retrying, dead
    status: int | None
    error: str | None
    job_id: str | None = None  # with `recent`
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """An outbox event of a job, with its deliveries (each with its attempts)."""

    id: uuid.UUID
    type: str
    status: str
    created_at: datetime
    dispatched_at: datetime | None
    payload: dict[str, Any]
    deliveries: list[tuple[Delivery, list[Attempt]]]


@dataclass(frozen=True, slots=True)
class Figures:
    """A subscriber's attempts over a window."""

    attempts: int
    delivered: int
    p50_ms: float | None
    p99_ms: float | None
    last_failure: str | None
    last_failure_at: datetime | None

    @property
    def success_rate(self) -> float | None:
        return self.delivered / self.attempts if self.attempts else None


_d, _o, _a = tables.deliveries, tables.outbox_events, tables.delivery_attempts
_DELIVERY_COLUMNS: tuple[Any, ...] = (
    _d.c.id,
    _d.c.state,
    _d.c.subscription_id,
    _d.c.event_id,
    _o.c.type,
    _d.c.job_id,
    _d.c.attempts,
    _d.c.next_attempt_at,
    _d.c.last_attempt_at,
    _d.c.last_status,
    _d.c.last_error,
    _d.c.created_at,
    _d.c.delivered_at,
)
_ATTEMPT_COLUMNS: tuple[Any, ...] = (
    _a.c.delivery_id,
    _a.c.subscription_id,
    _a.c.attempt,
    _a.c.at,
    _a.c.duration_ms,
    _a.c.outcome,
    _a.c.status,
    _a.c.error,
)


def _where(statement: Any, filters: Filters) -> Any:
    if filters.state is not None:
        statement = statement.where(_d.c.state == filters.state)
    if filters.subscription_id is not None:
        statement = statement.where(_d.c.subscription_id == filters.subscription_id)
    if filters.job_id is not None:
        # Through the job's events (uq_outbox_events_job_id_status, then uq_deliveries_event_id_…):
        # deliveries.job_id is indexed only among pending rows.
        events = sa.select(_o.c.id).where(_o.c.job_id == filters.job_id)
        statement = statement.where(_d.c.event_id.in_(events.scalar_subquery()))
    return statement


async def listing(conn: AsyncConnection, filters: Filters, *, limit: int, before: int | None = None) -> list[Delivery]:
    """Deliveries matching `filters`, newest first, with ids below `before` when given."""
    statement = sa.select(*_DELIVERY_COLUMNS).select_from(_d.join(_o, _o.c.id == _d.c.event_id))
    statement = _where(statement, filters).order_by(_d.c.id.desc()).limit(limit)
    if before is not None:
        statement = statement.where(_d.c.id < before)
    return [Delivery(*tuple(row)) for row in await conn.execute(statement)]


async def ids(conn: AsyncConnection, filters: Filters, *, after: int | None, limit: int) -> list[int]:
    """Ids of deliveries matching `filters`, in id order from `after` on: a walk in batches."""
    statement = _where(sa.select(_d.c.id), filters).order_by(_d.c.id).limit(limit)
    if after is not None:
        statement = statement.where(_d.c.id > after)
    return [row[0] for row in await conn.execute(statement)]


async def count(conn: AsyncConnection, filters: Filters) -> int:
    return int((await conn.execute(_where(sa.select(sa.func.count()).select_from(_d), filters))).scalar_one())


async def of_job(conn: AsyncConnection, job_id: str) -> list[Event]:
    """A job's outbox events in order, each with its deliveries and their attempts."""
    events = (
        await conn.execute(
            sa.select(_o.c.id, _o.c.type, _o.c.status, _o.c.created_at, _o.c.dispatched_at, _o.c.payload)
            .where(_o.c.job_id == job_id)
            .order_by(_o.c.seq)
        )
    ).all()
    if not events:
        return []
    rows = await conn.execute(
        sa.select(*_DELIVERY_COLUMNS)
        .select_from(_d.join(_o, _o.c.id == _d.c.event_id))
        .where(_d.c.event_id.in_([e.id for e in events]))
        .order_by(_d.c.subscription_id)
    )
    found = [Delivery(*tuple(row)) for row in rows]
    attempts = await of_deliveries(conn, [d.id for d in found])
    return [
        Event(
            id=e.id,
            type=e.type,
            status=e.status,
            created_at=e.created_at,
            dispatched_at=e.dispatched_at,
            payload=e.payload,
            deliveries=[(d, attempts.get(d.id, [])) for d in found if d.event_id == e.id],
        )
        for e in events
    ]


async def of_deliveries(conn: AsyncConnection, delivery_ids: list[int]) -> dict[int, list[Attempt]]:
    """Every attempt of each delivery, in order."""
    if not delivery_ids:
        return {}
    rows = await conn.execute(
        sa.select(*_ATTEMPT_COLUMNS).where(_a.c.delivery_id.in_(delivery_ids)).order_by(_a.c.delivery_id, _a.c.id)
    )
    attempts: dict[int, list[Attempt]] = {}
    for row in rows:
        attempts.setdefault(row.delivery_id, []).append(Attempt(*tuple(row)))
    return attempts


async def recent(
    conn: AsyncConnection,
    *,
    subscription_id: str | None = None,
    failed_since: datetime | None = None,
    limit: int = 20,
) -> list[Attempt]:
    """The latest attempts, newest first: of one subscriber, or the failed ones of any since
    `failed_since` (read through ix_delivery_attempts_failed, which holds failures only: a walk
    back through every attempt would pass a month of successes to find none).

    Failures of every subscriber are read a subscriber at a time, each the newest `limit` of its
    range of the index, then merged: the index leads with the subscriber, so a range of times
    across all of them walked every failure ever kept (52 ms at a million; the overview asks
    every 5 s)."""
    attempts: Any = _a
    source: Any = _a
    if failed_since is not None and subscription_id is None:
        s = tables.subscriptions
        attempts = (
            sa.select(*_a.c)
            .where(_a.c.subscription_id == s.c.id, _a.c.outcome != "delivered", _a.c.at >= failed_since)
            .order_by(_a.c.at.desc())
            .limit(limit)
            .lateral("failed")
        )
        source = s.join(attempts, sa.true())
    statement = (
        sa.select(*(attempts.c[column.name] for column in _ATTEMPT_COLUMNS), _d.c.job_id, _o.c.type)
        .select_from(source.join(_d, _d.c.id == attempts.c.delivery_id).join(_o, _o.c.id == _d.c.event_id))
        .order_by(attempts.c.at.desc())
        .limit(limit)
    )
    if subscription_id is not None:
        statement = statement.where(_a.c.subscription_id == subscription_id)
        if failed_since is not None:
            statement = statement.where(_a.c.outcome != "delivered", _a.c.at >= failed_since)
    return [Attempt(*tuple(row)) for row in await conn.execute(statement)]


# Counts and send times from attempt_minutes (receiver/core/minutes.py), a row per subscriber,
# bucket and minute: an hour at a thousand attempts a second is 10 million attempts to sort for a
# percentile, and at most 60 x 50 rows a subscriber here. The last failure is one row of
# ix_delivery_attempts_failed a subscriber.
_FIGURES = sa.text(
    """
    SELECT subscription_id, bucket, sum(attempts)::bigint, sum(delivered)::bigint
    FROM attempt_minutes
    WHERE minute >= :since
    GROUP BY 1, 2
    """
)
_LAST_FAILURES = sa.text(
    """
    SELECT s.id, l.error, l.at
    FROM subscriptions s
    LEFT JOIN LATERAL (
        SELECT coalesce(a.error, 'HTTP ' || a.status) AS error, a.at
        FROM delivery_attempts a
        WHERE a.subscription_id = s.id AND a.at >= :since AND a.outcome <> 'delivered'
        ORDER BY a.at DESC
        LIMIT 1
    ) l ON true
    """
)


async def figures(conn: AsyncConnection, since: datetime) -> dict[str, Figures]:
    """Each subscriber's attempts since the minute of `since`: how many, how many delivered, the
    send time's p50 and p99 (estimated from buckets a tenth of a decade wide, so within about
    12 % of the exact figure), and the last failure."""
    floor = since.replace(second=0, microsecond=0)
    counted: dict[str, dict[int, tuple[int, int]]] = {}
    for subscription_id, bucket, attempts, delivered in await conn.execute(_FIGURES, {"since": floor}):
        counted.setdefault(subscription_id, {})[int(bucket)] = (int(attempts), int(delivered))
    found: dict[str, Figures] = {}
    for subscription_id, error, at in await conn.execute(_LAST_FAILURES, {"since": floor}):
        buckets = counted.get(subscription_id, {})
        timed = {bucket: attempts for bucket, (attempts, _) in buckets.items() if bucket >= 0}
        found[subscription_id] = Figures(
            sum(attempts for attempts, _ in buckets.values()),
            sum(delivered for _, delivered in buckets.values()),
            latency_quantile(timed, 0.5),
            latency_quantile(timed, 0.99),
            error,
            at,
        )
    return found


def latency_bounds(bucket: int) -> tuple[float, float]:
    """The milliseconds a receiver_latency_bucket() bucket holds, [low, high)."""
    if bucket == 0:
        return 0.0, 1.0
    return 10 ** ((bucket - 1) / 10), 10 ** (bucket / 10)


def latency_quantile(buckets: dict[int, int], q: float) -> float | None:
    """The q-quantile of the send times counted in `buckets` (bucket: attempts), interpolated
    linearly within the bucket it falls in, as Prometheus's histogram_quantile does."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(buckets):
        count = buckets[bucket]
        if count > 0 and seen + count >= rank:
            low, high = latency_bounds(bucket)
            return low + (high - low) * (rank - seen) / count
        seen += count
    return latency_bounds(max(buckets))[1]
