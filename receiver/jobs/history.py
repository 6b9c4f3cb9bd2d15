"""A job's history: every status anyone reported, with the delivery that brought it and, for a
report that changed nothing, why. `GET /v1/jobs/{id}` and the console's job page read it here.

Why a report did not apply is decided in SQL with the state machine's own functions
(receiver_status_terminal, receiver_status_rank; receiver/sql/state_machine.sql), so the words
the console shows cannot drift from the rules the database applies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

Verdict = Literal["registered", "applied", "announced_before", "same_status", "after_terminal", "out_of_order"]

VERDICTS: dict[str, str] = {
    "registered": "registered through POST /v1/jobs or receiver submit",
    "applied": "applied",
    "announced_before": "applied; this status was announced before, so no new event",
    "same_status": "not applied: a redelivery of the status the job already had, under a new idempotency key",
    "after_terminal": "not applied: it came after the job had reached a final state",
    "out_of_order": "not applied: out of order (the job had already moved past this status)",
}


@dataclass(frozen=True, slots=True)
class Report:
    """One job_events row: a status reported by a webhook, a reconciliation poll or the API."""

    seq: int
    received_at: datetime
    source: str  # webhook, poll or api
    status: str
    previous_status: str | None
    applied: bool
    verdict: Verdict
    event_id: uuid.UUID | None
    event_type: str | None
    payload: Any  # what a poll found (webhooks: None, see `body`)
    # The inbound delivery, for webhooks:
    endpoint: str | None
    idempotency_key: str | None
    replay_count: int | None  # later copies under the same key (not applied)
    last_replay_at: datetime | None
    conflict_count: int | None  # of those, copies whose body differed
    headers: dict[str, str] | None
    body: bytes | None  # raw, as received (None once pruned)

    @property
    def explanation(self) -> str:
        return VERDICTS[self.verdict]


_REPORTS = sa.text(
    """
    SELECT e.id, e.received_at, e.source, e.status, e.previous_status, e.applied,
           CASE
             WHEN e.source = 'api' THEN 'registered'
             WHEN e.applied AND e.outbox_event_id IS NOT NULL THEN 'applied'
             WHEN e.applied THEN 'announced_before'
             WHEN e.status = e.previous_status THEN 'same_status'
             WHEN receiver_status_terminal(e.previous_status) THEN 'after_terminal'
             ELSE 'out_of_order'
           END,
           e.outbox_event_id, o.type, e.payload,
           w.endpoint, w.idempotency_key, w.replay_count, w.last_replay_at, w.conflict_count, w.headers,
           CASE WHEN :with_bodies THEN w.body END
    FROM job_events e
    LEFT JOIN inbound_webhooks w ON w.id = e.inbound_id
    LEFT JOIN outbox_events o ON o.id = e.outbox_event_id
    WHERE e.job_id = :job_id
    ORDER BY e.id
    """
)


async def reports(conn: AsyncConnection, job_id: str, *, with_bodies: bool = False) -> list[Report]:
    """Every report on `job_id` in arrival order; raw webhook bodies only when asked for."""
    rows = await conn.execute(_REPORTS, {"job_id": job_id, "with_bodies": with_bodies})
    return [Report(*tuple(row)) for row in rows]
