"""Replaying many deliveries: in batches of BATCH, each its own short transaction, with the
progress written to `replay_runs` so that the page following it (in any server process) shows
how far it has got. One statement over a hundred thousand dead deliveries would hold its locks
for seconds and say nothing until the end.

The batches walk the matching deliveries in id order from where the last stopped, so a run
ends even as the rows it queues stop matching (dead ones become pending).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import RedirectResponse

from receiver.console import audit, state, web
from receiver.core import db, tables
from receiver.outbound import deliveries, outbox

log = logging.getLogger("receiver.console.replays")

BATCH = 1000
# A run whose process stopped has no one to finish it: after this long without a batch it is
# shown as stopped.
STALLED_AFTER = timedelta(seconds=30)
_t = tables.replay_runs


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    filter: dict[str, str | None]
    total: int | None
    examined: int
    queued: int
    error: str | None

    @property
    def state(self) -> str:
        if self.error is not None:
            return "failed"
        if self.finished_at is not None:
            return "finished"
        if datetime.now(UTC) - self.updated_at > STALLED_AFTER:
            return "stopped"
        return "running"

    @property
    def fraction(self) -> float:
        if self.finished_at is not None and self.error is None:
            return 1.0
        return min(self.examined / self.total, 1.0) if self.total else 0.0


def describe(filters: deliveries.Filters) -> dict[str, str | None]:
    return {"state": filters.state, "subscription_id": filters.subscription_id, "job_id": filters.job_id}


async def start(request: Request, filters: deliveries.Filters) -> int:
    """Record the replay (audit log and replay_runs, one transaction) and start it; its run id."""
    engine = web.state(request).engine
    async with audit.acting(engine, web.actor(request), "deliveries.replay", filters.subscription_id) as (
        conn,
        detail,
    ):
        total = await deliveries.count(conn, filters)
        inserted = await conn.execute(_t.insert().values(filter=describe(filters), total=total).returning(_t.c.id))
        run_id = int(inserted.scalar_one())
        detail.update(filter=describe(filters), matching=total, run=run_id)
    state.of(request.scope).spawn(f"replay-{run_id}", _run(engine, run_id, filters))
    return run_id


def follow(run_id: int) -> RedirectResponse:
    return RedirectResponse(f"/console/replays/{run_id}", 303)


async def _run(engine: AsyncEngine, run_id: int, filters: deliveries.Filters) -> None:
    after: int | None = None
    examined = queued = 0
    try:
        while True:
            async with db.begin(engine) as conn:
                ids = await deliveries.ids(conn, filters, after=after, limit=BATCH)
                if ids:
                    queued += await outbox.replay_deliveries(await db.driver_connection(conn), ids)
                    examined += len(ids)
                    after = ids[-1]
                await conn.execute(
                    _t.update()
                    .where(_t.c.id == run_id)
                    .values(
                        examined=examined,
                        queued=queued,
                        updated_at=sa.func.now(),
                        finished_at=None if ids else sa.func.now(),
                    )
                )
            if not ids:
                log.info("replay %d finished: %d deliveries queued again of %d", run_id, queued, examined)
                return
    except Exception as exc:
        log.exception("replay %d failed after %d deliveries", run_id, examined)
        async with db.begin(engine) as conn:
            await conn.execute(
                _t.update()
                .where(_t.c.id == run_id)
                .values(error=f"{type(exc).__name__}: {exc}"[:500], finished_at=sa.func.now(), updated_at=sa.func.now())
            )


async def get(engine: AsyncEngine, run_id: int) -> Run | None:
    async with db.begin(engine) as conn:
        row = (await conn.execute(sa.select(*_t.c).where(_t.c.id == run_id))).first()
    return Run(*tuple(row)) if row is not None else None
