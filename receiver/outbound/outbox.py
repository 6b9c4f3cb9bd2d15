"""The outbox's life after ingest, in SQL: fan out, claim, complete, replay, prune.

PostgreSQL coordinates every publisher process:
- fan-out claims undispatched events with SKIP LOCKED and writes one delivery
  per matching subscription in the same statement;
- claiming takes due deliveries with SKIP LOCKED under a lease, and only the
  head of each (subscription, job) line, so events of one job never overtake
  each other, even across processes;
- completions are written back in batches, and only by the claim's holder.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from psycopg import AsyncConnection

from receiver.core.minutes import FOLD_LOCK
from receiver.outbound import operational

DeliveryState = Literal["pending", "delivered", "dead"]


def _matches(service: str) -> str:
    """Subscription s wants event o (its job's service given as an SQL expression). The rule,
    operational events included (asked for by name only, never about the subscriber itself), is
    receiver_delivers() in receiver/sql/operational.sql; the planner inlines it."""
    return f"receiver_delivers(s.id, s.event_types, s.services, o.type, o.subject, {service})"


# The line a delivery keeps order in (deliveries.job_id): its job, or for an operational event
# (which has none) what it is about, so that e.g. circuit_opened and circuit_closed about one
# subscriber arrive in that order.
_LINE = "coalesce(o.job_id, 'operational:' || o.subject)"


# One fan-out at a time (a transaction-scoped advisory lock; the others skip the turn).
# Two publishers fanning out concurrently would each lock part of the same range, and
# whichever committed first could make a job's later event the head of its line while
# the earlier one had no delivery row yet: it would be sent first.
FAN_OUT_LOCK = 0x72656376  # "recv"

# The batch carries what matching needs, and the update finds its rows by primary key: a
# join back to outbox_events would be planned as a scan of the whole table.
FAN_OUT = f"""
WITH gate AS (
    SELECT pg_try_advisory_xact_lock({FAN_OUT_LOCK}) AS mine
), o AS (
    SELECT o.id, {_LINE} AS line, o.seq, o.type, o.subject, o.created_at, o.payload -> 'data' ->> 'service' AS service
    FROM outbox_events o, gate
    WHERE gate.mine AND o.dispatched_at IS NULL
    ORDER BY o.seq
    LIMIT %(limit)s
    FOR UPDATE OF o SKIP LOCKED
), fanned AS (
    INSERT INTO deliveries (event_id, subscription_id, job_id, event_seq)
    SELECT o.id, s.id, o.line, o.seq
    FROM o
    JOIN subscriptions s ON s.created_at <= o.created_at AND {_matches("o.service")}
    ON CONFLICT (event_id, subscription_id) DO NOTHING
    RETURNING 1
)
UPDATE outbox_events SET dispatched_at = now()
WHERE id = ANY(ARRAY(SELECT o.id FROM o))
RETURNING (SELECT count(*) FROM fanned)
"""

# Only the claim it reports on: `claimed_until` identifies one claim of a row (a row can be
# claimed again by the same publisher once an earlier claim was released or ran out).
# A released claim (undo) was never attempted: it goes back as it was, attempt uncounted and
# `last_attempt_at` what it was before the claim.
_WRITE_BACK = """
UPDATE deliveries d SET
    state = v.state,
    last_status = CASE WHEN v.undo THEN d.last_status ELSE v.status END,
    last_error = CASE WHEN v.undo THEN d.last_error ELSE v.error END,
    attempts = d.attempts - v.undo::integer,
    last_attempt_at = CASE WHEN v.undo THEN v.previous_attempt_at ELSE d.last_attempt_at END,
    next_attempt_at = coalesce(v.next_attempt_at, d.next_attempt_at),
    delivered_at = CASE WHEN v.state = 'delivered' THEN now() ELSE d.delivered_at END,
    claimed_by = NULL,
    claimed_until = NULL
FROM unnest(%(ids)s::bigint[], %(claims)s::timestamptz[], %(states)s::text[], %(statuses)s::integer[],
            %(errors)s::text[], %(nexts)s::timestamptz[], %(undo)s::boolean[], %(previous)s::timestamptz[],
            %(started)s::timestamptz[], %(durations)s::integer[])
     AS v(id, claimed_until, state, status, error, next_attempt_at, undo, previous_attempt_at, started_at, duration_ms)
WHERE d.id = v.id AND d.claimed_by = %(me)s AND d.claimed_until = v.claimed_until
RETURNING d.id, d.subscription_id, d.attempts, coalesce(v.started_at, d.last_attempt_at) AS started_at,
    v.duration_ms, v.state, v.status, v.error, v.undo
"""
# Every attempt written back also gets its row in the attempt history, in the same statement:
# one multi-row insert per batch, and only for the claims this publisher still held.
_RECORD = """
INSERT INTO delivery_attempts (delivery_id, subscription_id, attempt, at, duration_ms, outcome, status, error)
SELECT id, subscription_id, attempts, started_at, duration_ms,
    CASE state WHEN 'pending' THEN 'retrying' ELSE state END, status, error
FROM done WHERE NOT undo
"""
COMPLETE = f"WITH done AS ({_WRITE_BACK.strip()}) {_RECORD.strip()}"

# Subscriber health in the claim (receiver/outbound/health.py has the rest). A subscription with
# a rate limit, or whose circuit is past its cool-off, is claimed only through its own row: the
# gate locks it, skipping a row another publisher's claim holds (that claim takes this turn's
# slots), and FOR UPDATE reads the row as last committed, so two publishers never hand out the
# same slot or a second probe. An open circuit is not in the gate and not claimed from at all: it
# costs no claim work. A subscription with neither never enters the gate.
_GATE = """
SELECT s.id, greatest(s.next_send_at, now()) AS first_slot, s.rate_period / s.rate_limit AS spacing,
    s.circuit_open_until IS NOT NULL AS probe
FROM subscriptions s
WHERE s.state = 'enabled' AND (s.kind = 'http' OR s.id = ANY(%(brokers)s))
  AND (s.rate_limit IS NOT NULL OR s.circuit_open_until IS NOT NULL)
  AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= now())
  AND (s.next_send_at IS NULL OR s.next_send_at < now() + %(horizon)s)
  AND EXISTS (SELECT FROM deliveries d
              WHERE d.subscription_id = s.id AND d.state = 'pending' AND d.next_attempt_at <= now())
FOR UPDATE OF s SKIP LOCKED
"""
# What the gate allows a subscription in one claim: one probe; and under a rate limit, the slots
# starting before now() + horizon (virtual scheduling: slot k is first_slot + k * spacing).
_GATE_SHARE = (
    "CASE WHEN g.probe THEN 1 END,"
    " ceil(extract(epoch FROM now() + %(horizon)s - g.first_slot) / extract(epoch FROM g.spacing))::integer,"
    # Outside the gate (an open circuit, or a row another claim holds): LIMIT 0, which stops
    # before the index is read, whatever order the planner joins in.
    " CASE WHEN g.id IS NULL AND (s.rate_limit IS NOT NULL OR s.circuit_open_until IS NOT NULL) THEN 0 END"
)
# Each delivery taken gets its slot (in claim order), and the subscription's next free slot moves
# past the last one taken; a probe marks the circuit half open for the probe's lease (another
# probe goes out only if this one's claim runs out). Slots are returned as the database's clock
# reads them, with that clock as each row is returned: `claim` counts them from the last of
# these readings, the statement's end, so a slow statement does not shift one publisher's slots.
_PACED = """
ranked AS (
    SELECT due.*, g.probe, extract(epoch FROM g.spacing)::float8 AS spacing,
        extract(epoch FROM g.first_slot + g.spacing * (row_number() OVER (
            PARTITION BY due.subscription_id ORDER BY due.next_attempt_at, due.event_seq) - 1))::float8 AS slot
    FROM due LEFT JOIN gate g ON g.id = due.subscription_id
), paced AS (
    UPDATE subscriptions s SET
        next_send_at = CASE WHEN g.spacing IS NULL THEN s.next_send_at ELSE g.first_slot + g.spacing * n.taken END,
        circuit_open_until = CASE WHEN g.probe THEN now() + %(lease)s ELSE s.circuit_open_until END,
        circuit_probe = CASE WHEN g.probe THEN n.first ELSE s.circuit_probe END
    FROM gate g, (SELECT subscription_id, count(*) AS taken, min(id) AS first FROM due GROUP BY subscription_id) n
    WHERE s.id = g.id AND n.subscription_id = g.id
)
"""
# Each subscription contributes at most its free share of slots (cap minus what this
# publisher already has in flight for it), looked up per subscription, so a subscriber
# with a deep backlog cannot fill every slot in one claim and delay the others.
#
# The plan must not depend on statistics: `deliveries` churns faster than autovacuum
# analyzes it, and a plan chosen for an empty table would scan the whole backlog. So every
# step is an index walk that stops early:
# - per subscription, `ix_deliveries_due` in (next_attempt_at, event_seq) order, locking
#   with SKIP LOCKED as it goes and stopping at the subscription's share;
# - a row goes only if it is the head of its (subscription, job) line: the lowest pending
#   event_seq, one probe of `ix_deliveries_order`. A line whose head is in flight or
#   waiting for a retry sends nothing, so a job's events never overtake each other.
# Completions ride along with the claim: one statement, one commit, one round trip per
# turn. The claim sees the table as it was before them (one snapshot), so it skips the rows
# being completed (`ids`) and a line whose head completes now advances on the next turn.
CLAIM = f"""
WITH done AS (
    {_WRITE_BACK.strip()}
), recorded AS (
    {_RECORD.strip()}
), busy AS (
    SELECT * FROM unnest(%(busy_ids)s::text[], %(busy_counts)s::integer[]) AS b(subscription_id, in_flight)
), gate AS (
    {_GATE.strip()}
), due AS (
    SELECT c.id, s.id AS subscription_id, c.next_attempt_at, c.event_seq, c.last_attempt_at
    FROM subscriptions s
    LEFT JOIN busy b ON b.subscription_id = s.id
    LEFT JOIN gate g ON g.id = s.id
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at, d.event_seq, d.last_attempt_at
        FROM deliveries d
        WHERE d.subscription_id = s.id
          AND d.state = 'pending'
          AND d.next_attempt_at <= now()
          AND (d.claimed_until IS NULL OR d.claimed_until < now())
          AND d.id <> ALL(%(ids)s::bigint[])
          AND d.event_seq = (
              SELECT p.event_seq FROM deliveries p
              WHERE p.subscription_id = s.id AND p.job_id = d.job_id AND p.state = 'pending'
              ORDER BY p.event_seq
              LIMIT 1)
        ORDER BY d.next_attempt_at, d.event_seq
        LIMIT greatest(least(%(cap)s - coalesce(b.in_flight, 0), %(limit)s, {_GATE_SHARE}), 0)
        FOR UPDATE OF d SKIP LOCKED
    ) c
    WHERE s.state = 'enabled' AND (s.kind = 'http' OR s.id = ANY(%(brokers)s))
      AND ((s.rate_limit IS NULL AND s.circuit_open_until IS NULL) OR g.id IS NOT NULL)
    ORDER BY c.next_attempt_at, c.event_seq
    LIMIT %(limit)s
), {_PACED.strip()}
UPDATE deliveries d SET
    claimed_by = %(me)s,
    claimed_until = now() + %(lease)s,
    attempts = d.attempts + 1,
    last_attempt_at = now()
FROM ranked due, outbox_events o
WHERE d.id = due.id AND o.id = d.event_id
RETURNING d.id, d.subscription_id, d.attempts, o.id, o.type, d.job_id, o.payload::text, o.created_at,
    d.claimed_until, due.last_attempt_at, o.traceparent, o.tracestate, d.replayed_at,
    due.slot, due.spacing, due.probe, extract(epoch FROM clock_timestamp())::float8 AS clock
"""

DISABLE_GONE = """
UPDATE subscriptions SET state = 'disabled', disabled_reason = %(reason)s, updated_at = now()
WHERE id = %(id)s AND state = 'enabled'
RETURNING url
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery_id: int
    subscription_id: str
    attempt: int
    event_id: uuid.UUID
    event_type: str
    job_id: str  # the delivery's line: the job, or operational:<subject> for an operational event
    body: bytes
    event_created_at: datetime
    claimed_until: datetime  # the lease, and what tells this claim of the row from any later one
    previous_attempt_at: datetime | None  # last_attempt_at before this claim, restored on release
    # The trace the event was created in (outbox_events), which its attempts continue, unless a
    # replay queued it again (replayed_at): then each attempt starts a trace linked to it.
    traceparent: str | None = None
    tracestate: str | None = None
    replayed_at: datetime | None = None
    # Under a rate limit: seconds from the claim to the delivery's slot, and the limit's interval
    # (None: no limit, send at once). A probe decides whether an open circuit closes.
    send_after: float | None = None
    spacing: float = 0.0
    probe: bool = False


class Timing(NamedTuple):
    """When a send started and how long it took."""

    started_at: datetime
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Completion:
    delivery_id: int
    claimed_until: datetime  # the claim it reports on
    state: DeliveryState
    status: int | None
    error: str | None
    next_attempt_at: datetime | None
    undo: bool = False  # a claim given back unattempted
    previous_attempt_at: datetime | None = None  # with undo: the last_attempt_at to restore
    started_at: datetime | None = None  # when the send started (None: when it was claimed)
    duration_ms: int | None = None  # how long the send took

    @classmethod
    def of(
        cls,
        item: Claimed,
        state: DeliveryState,
        status: int | None = None,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
        *,
        timing: Timing | None = None,
    ) -> Completion:
        """The outcome of `item`'s attempt, for its claim; `timing` goes into the attempt history."""
        started_at, duration_ms = timing if timing is not None else (None, None)
        return cls(
            item.delivery_id,
            item.claimed_until,
            state,
            status,
            error,
            next_attempt_at,
            started_at=started_at,
            duration_ms=duration_ms,
        )

    @classmethod
    def release(cls, item: Claimed) -> Completion:
        """`item`'s claim given back unattempted: the row goes back as it was."""
        return cls(item.delivery_id, item.claimed_until, "pending", None, None, None, True, item.previous_attempt_at)


@dataclass(frozen=True, slots=True)
class FannedOut:
    events: int  # events dispatched
    deliveries: int  # delivery rows written for them


async def fan_out(conn: AsyncConnection[Any], limit: int = 1000) -> FannedOut:
    """Fan out up to `limit` undispatched events."""
    cursor = await conn.execute(FAN_OUT, {"limit": limit})
    row = await cursor.fetchone()
    return FannedOut(cursor.rowcount, int(row[0]) if row else 0)


Statistics = Literal["analyzed", "fresh", "skipped", "not_allowed"]


async def keep_statistics(conn: AsyncConnection[Any], written: int) -> Statistics:
    """ANALYZE `deliveries` when `written` rows were added since the last time and the table
    has at least doubled (or has never been analyzed).

    The claim's plan is only as good as the planner's idea of the table's size, and a backlog
    arrives faster than autovacuum looks (a minute at best; never, where it is off): a plan
    made for an empty table, kept for a table of 100,000 rows, took seconds per claim. The
    doubling rule keeps the cost to a few ANALYZEs per burst, however large the table.
    SKIP_LOCKED: when a VACUUM or another publisher's ANALYZE holds the table, it is skipped
    ("skipped") instead of waiting behind it; the caller tries again later."""
    # Who may ANALYZE: the table's owner or the database's (superusers are members of both),
    # and from PostgreSQL 17 whoever holds MAINTAIN on it. PostgreSQL itself only warns.
    maintain = "has_table_privilege(c.oid, 'MAINTAIN')" if conn.info.server_version >= 170000 else "false"
    cursor = await conn.execute(
        "SELECT c.reltuples, pg_has_role(c.relowner, 'USAGE') OR pg_has_role(d.datdba, 'USAGE') OR "
        + maintain
        + ", pg_stat_get_last_analyze_time(c.oid)"
        + " FROM pg_class c, pg_database d WHERE c.oid = 'deliveries'::regclass AND d.datname = current_database()"
    )
    row = await cursor.fetchone()
    assert row is not None
    reltuples, allowed, analyzed_at = row
    if not allowed:
        return "not_allowed"
    if written < reltuples:
        return "fresh"
    await conn.execute("ANALYZE (SKIP_LOCKED) deliveries")
    cursor = await conn.execute("SELECT pg_stat_get_last_analyze_time('deliveries'::regclass)")
    after = await cursor.fetchone()
    done = after is not None and after[0] is not None and (analyzed_at is None or after[0] > analyzed_at)
    return "analyzed" if done else "skipped"


async def claim(
    conn: AsyncConnection[Any],
    *,
    me: str,
    limit: int,
    lease: timedelta,
    brokers: Sequence[str],
    cap: int,
    in_flight: Mapping[str, int],
    completions: Sequence[Completion] = (),
    horizon: timedelta = timedelta(seconds=1),
) -> list[Claimed]:
    """Write back `completions` and claim up to `limit` due deliveries, at most `cap` minus
    `in_flight[s]` for each subscription s, in one statement. A rate-limited subscription gets
    the slots that start within `horizon`, each delivery its own (`Claimed.send_after`)."""
    cursor = await conn.execute(
        CLAIM,
        {
            "limit": limit,
            "lease": lease,
            "horizon": horizon,
            "brokers": list(brokers),
            "cap": cap,
            "busy_ids": list(in_flight),
            "busy_counts": list(in_flight.values()),
            **_completion_params(me, completions),
        },
    )
    assert cursor.description is not None
    pace = [column.name for column in cursor.description].index("slot")  # slot, spacing, probe, clock
    rows = await cursor.fetchall()
    clock = max((row[pace + 3] for row in rows), default=0.0)
    return [
        Claimed(
            delivery_id=row[0],
            subscription_id=row[1],
            attempt=row[2],
            event_id=row[3],
            event_type=row[4],
            job_id=row[5],
            body=row[6].encode(),
            event_created_at=row[7],
            claimed_until=row[8],
            previous_attempt_at=row[9],
            traceparent=row[10],
            tracestate=row[11],
            replayed_at=row[12],
            send_after=None if row[pace] is None else row[pace] - clock,
            spacing=row[pace + 1] or 0.0,
            probe=bool(row[pace + 2]),
        )
        for row in rows
    ]


async def complete(conn: AsyncConnection[Any], me: str, completions: Sequence[Completion]) -> None:
    await conn.execute(COMPLETE, _completion_params(me, completions))


def _completion_params(me: str, completions: Sequence[Completion]) -> dict[str, Any]:
    return {
        "me": me,
        "ids": [c.delivery_id for c in completions],
        "claims": [c.claimed_until for c in completions],
        "states": [c.state for c in completions],
        "statuses": [c.status for c in completions],
        "errors": [c.error for c in completions],
        "nexts": [c.next_attempt_at for c in completions],
        "undo": [c.undo for c in completions],
        "previous": [c.previous_attempt_at for c in completions],
        "started": [c.started_at for c in completions],
        "durations": [c.duration_ms for c in completions],
    }


async def disable_gone(conn: AsyncConnection[Any], subscription_id: str, reason: str) -> bool:
    """Disable a subscriber that answered 410 Gone, and emit operational.subscriber_disabled in
    the same transaction. False when it was not enabled (already disabled, or deleted): several
    publishers may see its 410s, one of them disables it and emits."""
    async with conn.transaction():
        row = await (await conn.execute(DISABLE_GONE, {"id": subscription_id, "reason": reason})).fetchone()
        if row is None:
            return False
        data = {"subscriber_id": subscription_id, "url": row[0], "reason": reason}
        await operational.emit(conn, "operational.subscriber_disabled", data)
    return True


# What sending a delivery again means, for a replay of chosen events and of chosen deliveries:
# pending again from now, attempts counted from 1, the last outcome forgotten (the attempt
# history keeps it). A delivery still pending is left alone: it will go out anyway.
_REQUEUE = """
    state = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL, last_status = NULL,
    claimed_by = NULL, claimed_until = NULL, delivered_at = NULL, replayed_at = now()
"""

REPLAY = f"""
WITH chosen AS (
    SELECT o.id, {_LINE} AS job_id, o.seq, s.id AS subscription_id
    FROM outbox_events o
    JOIN subscriptions s ON {_matches("o.payload -> 'data' ->> 'service'")}
    WHERE (%(event_id)s::uuid IS NULL OR o.id = %(event_id)s::uuid)
      AND (%(job_id)s::text IS NULL OR o.job_id = %(job_id)s::text)
      AND (%(since)s::timestamptz IS NULL OR o.created_at >= %(since)s::timestamptz)
      AND (%(subscription_id)s::text IS NULL OR s.id = %(subscription_id)s::text)
      AND (%(dead)s::boolean IS FALSE OR EXISTS (
          SELECT 1 FROM deliveries x WHERE x.event_id = o.id AND x.subscription_id = s.id AND x.state = 'dead'))
)
INSERT INTO deliveries (event_id, subscription_id, job_id, event_seq, replayed_at)
SELECT id, subscription_id, job_id, seq, now() FROM chosen
ON CONFLICT (event_id, subscription_id) DO UPDATE SET {_REQUEUE.strip()}
WHERE deliveries.state <> 'pending'
RETURNING 1
"""


async def replay(
    conn: AsyncConnection[Any],
    *,
    dead: bool = False,
    event_id: uuid.UUID | None = None,
    job_id: str | None = None,
    since: datetime | None = None,
    subscription_id: str | None = None,
) -> int:
    """Send chosen events again (to subscribers whose filters match); returns deliveries queued.

    Deliveries still pending are left as they are: they will go out anyway."""
    cursor = await conn.execute(
        REPLAY,
        {
            "dead": dead,
            "event_id": event_id,
            "job_id": job_id,
            "since": since,
            "subscription_id": subscription_id,
        },
    )
    return cursor.rowcount


REPLAY_DELIVERIES = f"UPDATE deliveries SET {_REQUEUE.strip()} WHERE id = ANY(%(ids)s::bigint[]) AND state <> 'pending'"


async def replay_deliveries(conn: AsyncConnection[Any], ids: Sequence[int]) -> int:
    """Send these deliveries again (the console's selection); returns how many were queued."""
    cursor = await conn.execute(REPLAY_DELIVERIES, {"ids": list(ids)})
    return cursor.rowcount


PRUNE = (
    # Attempts first: those of the deliveries deleted next would otherwise go one cascade at a time.
    "DELETE FROM delivery_attempts WHERE at < %(cutoff)s",
    "DELETE FROM deliveries WHERE state = 'delivered' AND delivered_at < %(cutoff)s",
    """
    DELETE FROM outbox_events o
    WHERE o.dispatched_at IS NOT NULL AND o.created_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = o.id)
    """,
    "UPDATE inbound_webhooks SET body = NULL WHERE received_at < %(cutoff)s AND body IS NOT NULL",
    "DELETE FROM webhook_outcomes WHERE minute < %(cutoff)s",
    # Folded rows only (writer 0, which no trigger writes, under the fold's lock): a webhook moving
    # an old job's count never waits for prune. Rows not folded yet go at the next prune.
    "DELETE FROM job_minutes WHERE minute < %(cutoff)s AND writer = 0",
    "DELETE FROM attempt_minutes WHERE minute < %(cutoff)s AND writer = 0",
)


@dataclass(frozen=True, slots=True)
class Pruned:
    attempts: int  # delivery attempts older than the cutoff
    deliveries: int  # delivered deliveries
    events: int  # fully delivered events
    bodies: int  # raw webhook bodies dropped
    minutes: int  # per-minute webhook counts
    job_minutes: int  # per-minute job counts (the console's overview)
    attempt_minutes: int  # per-minute delivery attempt counts (the console's figures)


async def prune(conn: AsyncConnection[Any], cutoff: datetime) -> Pruned:
    """Delete delivered rows and fully delivered events, the attempt history and per-minute
    webhook, job and attempt counts, and drop raw bodies, older than `cutoff`. Jobs, job history and pending or
    dead deliveries stay."""
    counts: list[int] = []
    await conn.execute("SELECT pg_advisory_xact_lock(%(lock)s)", {"lock": FOLD_LOCK})
    for statement in PRUNE:
        cursor = await conn.execute(statement, {"cutoff": cutoff})
        counts.append(cursor.rowcount)
    return Pruned(*counts)


# The oldest waiting event is found by seq, which the pending indexes hold, rather than by
# min(created_at), which read every waiting row (and, for deliveries, its event): 0.3 s at a
# backlog of 350,000, on every scrape and every refresh of the console's overview, and longer the
# longer the outage it is there to show. seq and created_at can disagree by the length of a
# transaction (seq is taken at the insert, created_at at the transaction's start): milliseconds.
BACKLOG = """
SELECT
    (SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL),
    (SELECT coalesce(extract(epoch FROM now() - (
        SELECT created_at FROM outbox_events WHERE dispatched_at IS NULL ORDER BY seq LIMIT 1)), 0)),
    (SELECT count(*) FROM deliveries WHERE state = 'pending'),
    (SELECT coalesce(extract(epoch FROM now() - (
        SELECT created_at FROM outbox_events
        WHERE seq = (SELECT min(event_seq) FROM deliveries WHERE state = 'pending'))), 0)),
    (SELECT count(*) FROM deliveries WHERE state = 'dead')
"""


@dataclass(frozen=True, slots=True)
class Backlog:
    undispatched: int
    undispatched_oldest_seconds: float
    pending: int
    pending_oldest_seconds: float
    dead: int


async def backlog(conn: AsyncConnection[Any]) -> Backlog:
    """What is waiting: events not fanned out yet, deliveries not delivered yet, dead ones."""
    cursor = await conn.execute(BACKLOG)
    row = await cursor.fetchone()
    assert row is not None
    return Backlog(int(row[0]), float(row[1]), int(row[2]), float(row[3]), int(row[4]))
