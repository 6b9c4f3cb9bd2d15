"""Jobs per minute, service and status (`job_minutes`): what the console's overview counts.

Triggers on `jobs` keep the table in the transaction that writes a job (receiver/sql/
state_machine.sql, receiver_count_job()), in rows of each database backend's own so that
webhooks never wait for each other on a shared count. `run` folds those rows of past minutes
into one row per key once a minute, from each serve process (one at a time: the others find the
advisory lock taken and skip that minute), so that a day's count reads a row per key and minute.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg_pool import AsyncConnectionPool

from receiver.core import db, tables
from receiver.core.errors import DatabaseUnavailable

log = logging.getLogger("receiver.jobs.minutes")

FOLD_INTERVAL = 60.0


async def counts(conn: Any, since: datetime) -> list[tuple[str | None, str, int]]:
    """(service, status, jobs) of the jobs first seen since the minute of `since`, most jobs first."""
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


async def fold(conn: psycopg.AsyncConnection[Any], before: datetime) -> int:
    """Fold the per-backend rows of the minutes before `before` (one statement, autocommit)."""
    cursor = await conn.execute("SELECT receiver_fold_job_minutes(%s)", (before,))
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
            log.debug("job_minutes not folded (%s); the next fold will", exc)
