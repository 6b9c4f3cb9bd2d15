"""Bursts of forged signatures: a leaked webhook URL, or a secret rotated on one side only.

The server counts 401s per endpoint in memory (receiver/inbound/signature_failures.py); a
background task of each server process adds them to `signature_failures` every few seconds in
one transaction, which also looks at the window RECEIVER_FORGED_BURST names, across every
process, and emits `operational.endpoint_forged_signatures` for an endpoint over it, once per
window whichever process sees it first (operational.emit_once). Rows older than a week go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from receiver.core import durations
from receiver.core.config import Burst
from receiver.inbound.signature_failures import Counts, SignatureFailures
from receiver.outbound import operational

log = logging.getLogger("receiver.outbound.forgeries")

FLUSH_INTERVAL = 5.0
KEEP = timedelta(days=7)  # long enough for "per hour, this week" in the console
PRUNE_EVERY = 600.0

ADD = """
INSERT INTO signature_failures AS f (endpoint, minute, failures)
SELECT * FROM unnest(%(endpoints)s::text[], %(minutes)s::timestamptz[], %(failures)s::integer[])
ON CONFLICT (endpoint, minute) DO UPDATE SET failures = f.failures + EXCLUDED.failures
"""

# Minutes that started within the window: a 5m window sums the current minute and the four
# before it.
OVER = """
SELECT endpoint, sum(failures)::bigint FROM signature_failures
WHERE endpoint = ANY(%(endpoints)s) AND minute > now() - %(window)s
GROUP BY endpoint
HAVING sum(failures) >= %(threshold)s
ORDER BY endpoint
"""

PRUNE = "DELETE FROM signature_failures WHERE minute < now() - %(keep)s"

PER_HOUR = """
SELECT endpoint, date_trunc('hour', minute) AS hour, sum(failures)::bigint FROM signature_failures
WHERE minute >= %(since)s
GROUP BY 1, 2
"""


async def flush(conn: psycopg.AsyncConnection[Any], counts: Counts, burst: Burst | None) -> list[str]:
    """Add `counts` to signature_failures and emit for the endpoints now over `burst`, in one
    transaction; returns the endpoints an event was emitted for."""
    if not counts:
        return []
    endpoints = sorted({endpoint for endpoint, _ in counts})
    emitted: list[str] = []
    async with conn.transaction():
        await conn.execute(
            ADD,
            {
                "endpoints": [endpoint for endpoint, _ in counts],
                "minutes": [datetime.fromtimestamp(minute, UTC) for _, minute in counts],
                "failures": list(counts.values()),
            },
        )
        if burst is None:
            return []
        over = await (
            await conn.execute(OVER, {"endpoints": endpoints, "window": burst.window, "threshold": burst.failures})
        ).fetchall()
        for endpoint, failures in over:
            data = {
                "endpoint": endpoint,
                "failures": int(failures),
                "window": durations.format(burst.window),
                "threshold": burst.failures,
            }
            if await operational.emit_once(conn, "operational.endpoint_forged_signatures", data, window=burst.window):
                emitted.append(endpoint)
                log.warning(
                    "endpoint %s: %d webhooks with a bad signature within %s (a leaked URL, or a secret rotated "
                    "on one side only)",
                    endpoint,
                    failures,
                    durations.format(burst.window),
                )
    return emitted


async def per_hour(conn: psycopg.AsyncConnection[Any], since: datetime) -> dict[str, dict[datetime, int]]:
    """Requests refused for their signature since `since`, per endpoint and hour (the console)."""
    found: dict[str, dict[datetime, int]] = {}
    for endpoint, hour, failures in await (await conn.execute(PER_HOUR, {"since": since})).fetchall():
        found.setdefault(endpoint, {})[hour] = int(failures)
    return found


async def run(failures: SignatureFailures, pool: AsyncConnectionPool, burst: Burst | None) -> None:
    """Flush every FLUSH_INTERVAL until cancelled, and once more then. Counts a flush could not
    write are kept for the next one (a database outage loses none, and costs one entry per
    endpoint and minute meanwhile)."""
    pruned_at = 0.0
    try:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await _flush(failures, pool, burst)
            if time.monotonic() - pruned_at >= PRUNE_EVERY:
                with contextlib.suppress(psycopg.Error):
                    async with pool.connection() as conn:
                        await conn.execute(PRUNE, {"keep": KEEP})
                pruned_at = time.monotonic()
    finally:
        # Stopping: what was counted since the last flush, if the database takes it quickly.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(_flush(failures, pool, burst), timeout=2.0)


async def _flush(failures: SignatureFailures, pool: AsyncConnectionPool, burst: Burst | None) -> None:
    counts = failures.take()
    if not counts:
        return
    try:
        async with pool.connection() as conn:
            await flush(conn, counts, burst)
    except psycopg.Error as exc:
        failures.give_back(counts)
        log.debug("signature failures not written (%s); next flush", exc)
    except BaseException:  # cancelled mid-flush (stopping): the last flush takes them
        failures.give_back(counts)
        raise
