"""The webhook transaction: one call into `receiver_ingest()` (receiver/sql/state_machine.sql),
which records the delivery, moves the job through its state machine, appends
the history row and enqueues at most one outbox event per (job, status).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import orjson
from psycopg import AsyncConnection

from receiver.core.db import PooledConnection
from receiver.inbound.payloads import WebhookPayload

Outcome = Literal["accepted", "duplicate", "conflict"]

_INGEST = (
    "SELECT outcome, result_job_id, result_event_id, result_registered FROM receiver_ingest("
    "%s::text, %s::text, %s::bytea, %s::jsonb, %s::bytea, %s::text, %s::text, %s::text, %s::text, %s::jsonb,"
    " %s::timestamptz, %s::timestamptz, %s::float8, %s::integer, %s::integer)"
)


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: Outcome
    job_id: str
    event_id: uuid.UUID | None
    registered: bool | None  # None for duplicates


async def ingest(
    conn: AsyncConnection[object],
    *,
    endpoint: str,
    idempotency_key: str,
    body_sha256: bytes,
    headers: dict[str, str],
    body: bytes,
    payload: WebhookPayload,
) -> IngestResult:
    """Run the whole webhook transaction: one statement on an autocommit connection, so it has
    committed when this returns."""
    cursor = conn.kept_cursor() if isinstance(conn, PooledConnection) else conn.cursor()
    await cursor.execute(
        _INGEST,
        (
            endpoint,
            idempotency_key,
            body_sha256,
            orjson.dumps(headers).decode(),
            body,
            payload.job_id,
            payload.status,
            payload.service,
            payload.url,
            orjson.dumps(payload.metadata).decode() if payload.metadata is not None else None,
            payload.created_at,
            payload.completed_at,
            payload.duration,
            payload.width,
            payload.height,
        ),
    )
    row = await cursor.fetchone()
    assert row is not None  # the function always returns one row
    outcome: Outcome = row[0]  # type: ignore[index]
    job_id: str = row[1]  # type: ignore[index]
    event_id: uuid.UUID | None = row[2]  # type: ignore[index]
    registered: bool | None = row[3]  # type: ignore[index]
    return IngestResult(outcome=outcome, job_id=job_id, event_id=event_id, registered=registered)
