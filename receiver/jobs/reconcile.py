"""Reconciliation: ask the provider about jobs we have not heard of for a while.

A webhook that never arrives would leave a job `processing` forever. Jobs still
unfinished RECEIVER_STALE_AFTER (15 min) after their last change are looked up
with Doitong's `avatar(id)` query; a status found this way goes through the
same state machine and outbox as a webhook (recorded with source `poll`), so
consumers cannot tell the difference, and the late webhook, if it comes, adds
history but no second event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from opentelemetry.context import Context

from receiver.core import notify, tracing
from receiver.inbound import payloads
from receiver.jobs import doitong

log = logging.getLogger("receiver.jobs.reconcile")

# Stamping last_polled_at in the claim means two reconcilers never ask about the same job at once.
# receiver_status_terminal() is inlined by the planner, so the claim walks ix_jobs_unfinished.
CLAIM = """
UPDATE jobs SET last_polled_at = now()
WHERE id IN (
    SELECT id FROM jobs
    WHERE NOT receiver_status_terminal(status)
      AND greatest(updated_at, coalesce(last_polled_at, updated_at)) < now() - %(stale)s
    ORDER BY coalesce(last_polled_at, updated_at)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, status
"""
# One job, asked about now whatever its age ("reconcile now" in the console); a job in a final
# state is not asked about, as in CLAIM.
CLAIM_ONE = """
UPDATE jobs SET last_polled_at = now()
WHERE id = %(job_id)s AND NOT receiver_status_terminal(status)
RETURNING id, status
"""

APPLY = (
    "SELECT receiver_apply_job_event(%s, %s, 'poll', NULL, %s::jsonb, NULL, NULL, %s, %s, NULL, %s, NULL, NULL, %s, %s)"
)


@dataclass
class Round:
    checked: int = 0
    changed: int = 0
    events: int = 0
    unknown: int = 0
    errors: int = 0


async def reconcile_once(
    conn: psycopg.AsyncConnection[Any],
    api: doitong.DoitongClient,
    *,
    stale_after: timedelta,
    limit: int = 100,
    job_id: str | None = None,
) -> Round:
    """One pass over up to `limit` stale jobs, or over the one job `job_id` however recent its
    last change. `conn` must be in autocommit mode.

    With tracing on, a pass that found jobs is a trace of its own (span `reconcile`), each job a
    child span `reconcile job` around its request to Doitong; an event the poll creates keeps
    that span's context, so its deliveries continue the trace as a webhook's would."""
    result = Round()
    if job_id is None:
        claimed = await (await conn.execute(CLAIM, {"stale": stale_after, "limit": limit})).fetchall()
    else:
        claimed = await (await conn.execute(CLAIM_ONE, {"job_id": job_id})).fetchall()
    if not claimed:
        return result
    with tracing.span("reconcile", parent=Context()) as span:
        for job_id, current in claimed:
            result.checked += 1
            attributes = {"doitong.job.id": job_id, "doitong.job.status": current}
            with tracing.span("reconcile job", attributes=attributes) as job_span:
                try:
                    found = await api.avatar(job_id)
                except doitong.RateLimited as exc:
                    log.warning("reconciliation paused: %s", exc)
                    tracing.failed(job_span, str(exc), "rate_limited")
                    result.errors += 1
                    break
                except doitong.ProviderError as exc:
                    log.warning("could not look up job %s: %s", job_id, exc)
                    tracing.failed(job_span, str(exc), "provider_error")
                    result.errors += 1
                    continue
                if found is None:
                    job_span.set_attribute("doitong.reconcile.outcome", "unknown")
                    result.unknown += 1
                    continue
                status = payloads.normalize_status(found.status) if found.status else ""
                job_span.set_attribute("doitong.job.status_found", status)
                if not status or status == current:
                    job_span.set_attribute("doitong.reconcile.outcome", "unchanged")
                    continue
                traceparent, tracestate = tracing.w3c(job_span)
                raw = orjson.dumps(found.raw).decode()
                event = await (
                    await conn.execute(
                        APPLY,
                        (job_id, status, raw, found.url, found.created_at, found.duration, traceparent, tracestate),
                    )
                ).fetchone()
                result.changed += 1
                job_span.set_attribute("doitong.reconcile.outcome", "changed")
                if event is not None and event[0] is not None:
                    result.events += 1
                    job_span.set_attribute("doitong.event.id", str(event[0]))
                    log.info("reconciled job %s: %s -> %s (webhook missing)", job_id, current, status)
        for name in ("checked", "changed", "events", "unknown", "errors"):
            span.set_attribute(f"doitong.reconcile.{name}", getattr(result, name))
    if result.events:
        await conn.execute("SELECT pg_notify(%s, '')", (notify.CHANNEL,))
    return result


# Jobs reconciliation has asked about (last_polled_at is set) that are still unfinished `after`
# their last change: Doitong did not know them, did not answer, or keeps saying they run. Polls
# do not move updated_at, only a status change does. The walk is ix_jobs_unfinished's.
UNRESOLVED = """
WITH u AS (
    SELECT id, updated_at FROM jobs
    WHERE NOT receiver_status_terminal(status)
      AND updated_at < now() - %(after)s
      AND last_polled_at IS NOT NULL
)
SELECT (SELECT count(*) FROM u), (SELECT min(updated_at) FROM u), (SELECT max(updated_at) FROM u),
       ARRAY(SELECT id FROM u ORDER BY updated_at, id LIMIT %(shown)s),
       coalesce(extract(epoch FROM now() - (SELECT min(updated_at) FROM u)), 0)::float8
"""


@dataclass(frozen=True, slots=True)
class Unresolved:
    count: int
    oldest_job_ids: list[str]  # up to `shown`, oldest change first
    oldest_change: datetime | None
    newest_change: datetime | None
    oldest_seconds: float


async def unresolved(conn: psycopg.AsyncConnection[Any], *, after: timedelta, shown: int = 10) -> Unresolved:
    """The jobs reconciliation cannot resolve (see UNRESOLVED)."""
    row = await (await conn.execute(UNRESOLVED, {"after": after, "shown": shown})).fetchone()
    assert row is not None
    return Unresolved(int(row[0]), list(row[3]), row[1], row[2], float(row[4]))


async def run_periodically(
    pool: Any, api: doitong.DoitongClient, *, interval: timedelta, stale_after: timedelta, stop: asyncio.Event
) -> None:
    """Reconcile every `interval` until `stop` (inside `receiver publish` and `receiver run`)."""
    while not stop.is_set():
        try:
            async with pool.connection() as conn:
                done = await reconcile_once(conn, api, stale_after=stale_after)
            if done.checked:
                log.info(
                    "reconciliation: %d checked, %d changed, %d events, %d unknown, %d errors",
                    done.checked,
                    done.changed,
                    done.events,
                    done.unknown,
                    done.errors,
                )
        except (psycopg.Error, OSError) as exc:
            log.warning("reconciliation failed: %s", exc)
        except Exception:
            log.exception("reconciliation pass failed; trying again next interval")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval.total_seconds())
