"""Wake-ups for publishers: one NOTIFY on `receiver_outbox` per short interval,
however many events were committed in it.

NOTIFY inside the webhook transaction would take PostgreSQL's notify lock at
every commit and serialise them (bench/ingest.py measured ingest at about half
speed). The notification only says "look now"; publishers also poll, so one that
is lost costs at most RECEIVER_POLL_INTERVAL.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

CHANNEL = "receiver_outbox"
log = logging.getLogger("receiver.core.notify")


class Notifier:
    def __init__(self, pool: AsyncConnectionPool, *, interval: float = 0.002) -> None:
        self._pool = pool
        self._interval = interval
        self._pending = asyncio.Event()

    def poke(self) -> None:
        """Ask for a NOTIFY soon (cheap; call after each commit that created events)."""
        self._pending.set()

    async def run(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                async with self._pool.connection() as conn:
                    await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
            except (psycopg.Error, PoolTimeout) as exc:
                log.debug("NOTIFY not sent (%s); publishers will poll", exc)
            await asyncio.sleep(self._interval)
