"""Registering a job submitted through us: the one upsert behind `POST /v1/jobs` and `receiver submit`.

The merge rules (a registration fills in what only we know and never moves the status) are in
`receiver_register_job()`, receiver/sql/state_machine.sql.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

_REGISTER = sa.text(
    "SELECT created, status FROM receiver_register_job("
    ":id, :service, :type, :client_reference, CAST(:tags AS jsonb), :credit_cost, CAST(:input AS jsonb))"
)


class Registration(TypedDict):
    """What a caller knows about a job it submitted; None leaves a stored value as it is."""

    id: str
    service: str | None
    type: str | None
    client_reference: str | None
    tags: dict[str, str] | None
    credit_cost: int | None
    input: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Registered:
    created: bool  # False: merged into a job its webhooks (or an earlier registration) created
    status: str  # the job's status after the merge, which a registration never changes


async def register(conn: AsyncConnection, job: Registration) -> Registered:
    """Register `job`, or merge it into the row that already exists, in `conn`'s transaction."""
    row = (
        await conn.execute(_REGISTER, {**job, "tags": _json_or_none(job["tags"]), "input": _json_or_none(job["input"])})
    ).one()
    return Registered(created=row.created, status=row.status)


def _json_or_none(value: object) -> str | None:
    return None if value is None else orjson.dumps(value).decode()
