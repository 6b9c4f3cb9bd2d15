"""Webhook requests per minute and outcome, kept in `webhook_outcomes` for the console.

An accepted webhook leaves rows behind; a duplicate, a forged signature or an invalid body
leaves only the `receiver_webhooks` counter of the process that answered it. So each server
process adds what its own counter gained to `webhook_outcomes` every FLUSH_INTERVAL seconds:
one upsert, off the request path (the handler pays nothing more), and the rows add up across
replicas and worker processes, and outlive restarts.

A process that dies loses at most its last FLUSH_INTERVAL of counts.

`unauthorized` rows are the forged, missing or malformed signatures: the console's Endpoints page
reads them, and a hook given to `run` (receiver/outbound/forgeries.py) looks for a burst of them
in the transaction of each flush. They are counted here only, never once per request: a 401 must
cost no database write, as anyone can send one without the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from receiver.core import db, metrics
from receiver.core.errors import DatabaseUnavailable

log = logging.getLogger("receiver.inbound.outcomes")

FLUSH_INTERVAL = 2.0
Key = tuple[str, str]  # (endpoint, outcome)
# What run() calls after adding a flush's counts, in the same transaction: it sees them.
AfterFlush = Callable[[psycopg.AsyncConnection[Any], Mapping[Key, int]], Awaitable[object]]
# The handler's outcome for a missing, malformed or wrong signature (a 401).
UNAUTHORIZED = "unauthorized"

# How the handler's outcomes are grouped for people (the chart's series), in stacking order.
GROUPS: dict[str, tuple[str, ...]] = {
    "accepted": ("accepted",),
    "duplicate": ("duplicate", "conflict"),
    "rejected signature": (UNAUTHORIZED,),
    "invalid": ("bad_request", "too_large", "unsupported_encoding"),
    "other": ("not_found", "unavailable", "error", "disconnected"),
}
_GROUP_OF = {outcome: group for group, outcomes in GROUPS.items() for outcome in outcomes}

_ADD = """
INSERT INTO webhook_outcomes (minute, endpoint, outcome, requests)
SELECT date_trunc('minute', %(at)s::timestamptz), e, o, n
FROM unnest(%(endpoints)s::text[], %(outcomes)s::text[], %(counts)s::bigint[]) AS v(e, o, n)
ON CONFLICT (minute, endpoint, outcome) DO UPDATE SET requests = webhook_outcomes.requests + EXCLUDED.requests
"""


class Tally:
    """What the receiver_webhooks counter of this process gained since the last `take`."""

    def __init__(self) -> None:
        self._seen = _counter_values()

    def take(self) -> dict[Key, int]:
        now = _counter_values()
        gained = {key: int(value - self._seen.get(key, 0.0)) for key, value in now.items()}
        self._seen = now
        return {key: count for key, count in gained.items() if count > 0}


def _counter_values() -> dict[Key, float]:
    values: dict[Key, float] = {}
    for family in metrics.WEBHOOKS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                values[(sample.labels["endpoint"], sample.labels["outcome"])] = sample.value
    return values


async def add(conn: psycopg.AsyncConnection[Any], counts: Mapping[Key, int], at: datetime) -> None:
    """Add `counts` to the minute of `at` (one statement, on an autocommit connection)."""
    keys = list(counts)
    await conn.execute(
        _ADD,
        {
            "at": at,
            "endpoints": [endpoint for endpoint, _ in keys],
            "outcomes": [outcome for _, outcome in keys],
            "counts": [counts[key] for key in keys],
        },
    )


async def flush(
    conn: psycopg.AsyncConnection[Any], counts: Mapping[Key, int], at: datetime, after: AfterFlush | None = None
) -> None:
    """Add `counts` to the minute of `at` and run `after` on them, in one transaction."""
    async with conn.transaction():
        await add(conn, counts, at)
        if after is not None:
            await after(conn, counts)


async def run(pool: AsyncConnectionPool, *, after: AfterFlush | None = None, interval: float | None = None) -> None:
    """Flush this process's counts every `interval` seconds (FLUSH_INTERVAL) until cancelled,
    then once more. Counts that could not be written (PostgreSQL away) are kept for the next
    flush; `after` runs in each flush's transaction."""
    every = FLUSH_INTERVAL if interval is None else interval
    tally = Tally()
    pending: dict[Key, int] = {}

    async def flush_pending() -> None:
        for key, count in tally.take().items():
            pending[key] = pending.get(key, 0) + count
        if not pending:
            return
        try:
            async with db.translated(), pool.connection() as conn:
                await flush(conn, pending, datetime.now(UTC), after)
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.debug("webhook counts not written (%s); kept for the next flush", exc)
            return
        pending.clear()

    try:
        while True:
            await asyncio.sleep(every)
            await flush_pending()
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(flush_pending(), timeout=2.0)
        raise


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    counts: dict[str, int]  # per group of GROUPS

    @property
    def total(self) -> int:
        return sum(self.counts.values())


_SERIES = """
SELECT date_bin(%(width)s, minute, %(origin)s) AS bucket, outcome, sum(requests)::bigint
FROM webhook_outcomes
WHERE minute >= %(since)s
GROUP BY 1, 2
"""


async def series(conn: psycopg.AsyncConnection[Any], since: datetime, width: timedelta) -> list[Bucket]:
    """Requests per group in buckets of `width` from `since` (aligned on it) to now, empty
    buckets included, oldest first."""
    origin = since
    cursor = await conn.execute(_SERIES, {"width": width, "origin": origin, "since": since})
    found: dict[datetime, dict[str, int]] = {}
    for bucket, outcome, requests in await cursor.fetchall():
        group = _GROUP_OF.get(outcome, "other")
        counts = found.setdefault(bucket, {})
        counts[group] = counts.get(group, 0) + int(requests)
    buckets: list[Bucket] = []
    start, now = origin, datetime.now(UTC)
    while start <= now:
        buckets.append(Bucket(start, found.get(start, {})))
        start += width
    return buckets
