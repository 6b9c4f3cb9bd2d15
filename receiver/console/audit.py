"""The audit log: every state-changing console action, written in the transaction of the action
itself (an action that fails leaves no row, one that commits cannot lose its row)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.console.auth import Actor
from receiver.core import db, tables

_t = tables.audit_log


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    at: datetime
    actor: str
    session: str | None
    client: str | None
    action: str
    target: str | None
    detail: dict[str, Any] | None


async def record(
    conn: AsyncConnection, actor: Actor, action: str, target: str | None, detail: dict[str, Any] | None = None
) -> int:
    """Write one entry in `conn`'s transaction; returns its id. `detail` must hold no secret."""
    inserted = await conn.execute(
        _t.insert()
        .values(
            actor=actor.kind,
            session=actor.session_digest,
            client=actor.client,
            action=action,
            target=target,
            detail=detail or None,
        )
        .returning(_t.c.id)
    )
    return int(inserted.scalar_one())


@contextlib.asynccontextmanager
async def acting(
    engine: AsyncEngine, actor: Actor, action: str, target: str | None
) -> AsyncIterator[tuple[AsyncConnection, dict[str, Any]]]:
    """A transaction for one action: the block does it and fills in the detail; the entry is
    written last, in the same transaction."""
    detail: dict[str, Any] = {}
    async with db.begin(engine) as conn:
        yield conn, detail
        await record(conn, actor, action, target, detail)


async def entries(conn: AsyncConnection, *, before: int | None, limit: int) -> list[Entry]:
    """The newest entries first, with ids below `before` when given."""
    statement = sa.select(*_t.c).order_by(_t.c.id.desc()).limit(limit)
    if before is not None:
        statement = statement.where(_t.c.id < before)
    return [Entry(*tuple(row)) for row in await conn.execute(statement)]
