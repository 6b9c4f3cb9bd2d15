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
# What an accepted webhook did, for traces: a new event, or kept in history only because it came
# late or out of order (the job is past it), or because the job already had that status.
Detail = Literal["accepted", "duplicate", "conflict", "out_of_order", "unchanged"]

_INGEST = (
    "SELECT outcome, result_job_id, result_event_id, result_registered, result_status FROM receiver_ingest("
    "%s::text, %s::text, %s::bytea, %s::jsonb, %s::bytea, %s::text, %s::text, %s::text, %s::text, %s::jsonb,"
    " %s::timestamptz, %s::timestamptz, %s::float8, %s::integer, %s::integer, %s::text, %s::text)"
)


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: Outcome
    job_id: str
    event_id: uuid.UUID | None
    registered: bool | None  # None for duplicates
    job_status: str | None = None  # the job's status once committed; None for duplicates

    def detail(self, reported: str) -> Detail:
        """The outcome, telling apart what an accepted webhook that `reported` a status did."""
        if self.outcome != "accepted":
            return self.outcome
        if self.event_id is not None:
            return "accepted"
        return "unchanged" if self.job_status == reported else "out_of_order"


async def ingest(
    conn: AsyncConnection[object],
    *,
    endpoint: str,
    idempotency_key: str,
    body_sha256: bytes,
    headers: dict[str, str],
    body: bytes,
    payload: WebhookPayload,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> IngestResult:
    """Run the whole webhook transaction: one statement on an autocommit connection, so it has
    committed when this returns. `traceparent`/`tracestate`, when tracing is on, are stored
    with the outbox event it creates."""
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
            traceparent,
            tracestate,
        ),
    )
    row = await cursor.fetchone()
    assert row is not None  # the function always returns one row
    outcome: Outcome = row[0]  # type: ignore[index]
    job_id: str = row[1]  # type: ignore[index]
    event_id: uuid.UUID | None = row[2]  # type: ignore[index]
    registered: bool | None = row[3]  # type: ignore[index]
    job_status: str | None = row[4]  # type: ignore[index]
    return IngestResult(outcome, job_id, event_id, registered, job_status)
