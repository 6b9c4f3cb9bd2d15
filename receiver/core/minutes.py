"""The console's per-minute counts (`job_minutes`, `attempt_minutes`): folding them.

Triggers keep both tables in the transactions that write jobs and delivery attempts (receiver/
sql/state_machine.sql), in rows of each database backend's own so that webhooks and publishers
never wait for each other on a shared count. `run` folds those rows of past minutes into one row
per key once a minute, from each serve process (one at a time: the others find the advisory lock
taken and skip that minute), so that a day's counts read a row per key and minute. What reads
them: receiver/jobs/search.py (`counts`) and receiver/outbound/deliveries.py (`figures`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from receiver.core import db
from receiver.core.errors import DatabaseUnavailable

log = logging.getLogger("receiver.core.minutes")

FOLD_INTERVAL = 60.0
# The advisory lock receiver_fold_minutes() takes (and skips its turn when it cannot): whoever else
# deletes folded rows (`receiver prune`) holds it meanwhile, so neither waits for the other's rows.
FOLD_LOCK = 4611686018427388011


async def fold(conn: psycopg.AsyncConnection[Any], before: datetime) -> int:
    """Fold the per-backend rows of the minutes before `before` (one statement, autocommit);
    returns how many rows were folded (0 when another process is folding)."""
    cursor = await conn.execute("SELECT receiver_fold_minutes(%s)", (before,))
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def run(pool: AsyncConnectionPool, *, interval: float = FOLD_INTERVAL) -> None:
    """Fold the minutes before the current one every `interval` seconds until cancelled. A fold
    that fails (PostgreSQL away) is the next one's to do: the counts stay right meanwhile."""
    while True:
        await asyncio.sleep(interval)
        now = datetime.now(UTC)
        try:
            async with db.translated(), pool.connection() as conn:
                await fold(conn, now.replace(second=0, microsecond=0))
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.debug("per-minute counts not folded (%s); the next fold will", exc)
