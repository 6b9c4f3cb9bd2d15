"""`receiver deliveries | replay | prune`: what was sent, sending it again, and clearing up."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.core import db, durations
from receiver.core.config import Settings
from receiver.core.errors import ConfigError
from receiver.outbound import deliveries, outbox


def register(commands: Any) -> None:
    """Add this module's commands to the `receiver` parser."""
    deliveries = commands.add_parser("deliveries", help="list deliveries")
    deliveries.add_argument("--state", choices=["pending", "delivered", "dead"])
    deliveries.add_argument("--subscriber")
    deliveries.add_argument("--job")
    deliveries.add_argument("--limit", type=int, default=50)
    deliveries.set_defaults(handler=cmd_deliveries)

    replay = commands.add_parser("replay", help="send events again")
    chosen = replay.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--dead", action="store_true", help="every dead delivery")
    chosen.add_argument("--event", help="one event id")
    chosen.add_argument("--job", help="every event of a job")
    chosen.add_argument("--since", help="events since an ISO time, or a duration ago (24h)")
    replay.add_argument("--subscriber", help="only to this subscriber")
    replay.set_defaults(handler=cmd_replay)

    prune = commands.add_parser("prune", help="delete delivered rows and old raw bodies")
    prune.add_argument("--older-than", required=True, help="e.g. 30d")
    prune.set_defaults(handler=cmd_prune)


def cmd_deliveries(settings: Settings, args: argparse.Namespace) -> int:
    filters = deliveries.Filters(state=args.state, subscription_id=args.subscriber, job_id=args.job)

    async def fetch(conn: AsyncConnection) -> list[deliveries.Delivery]:
        return await deliveries.listing(conn, filters, limit=max(1, args.limit))

    rows = db.run_admin(settings, fetch)
    print(f"{'ID':>8} {'STATE':<9} {'SUBSCRIBER':<21} {'TYPE':<16} {'ATTEMPTS':>8}  JOB / EVENT / LAST")
    for r in rows:
        last = f"{r.last_status or ''} {r.last_error or ''}".strip()
        nxt = f" next {r.next_attempt_at.isoformat(timespec='seconds')}" if r.state == "pending" else ""
        print(
            f"{r.id:>8} {r.state:<9} {r.subscription_id:<21} {r.event_type:<16} {r.attempts:>8}  "
            f"{r.job_id} {r.event_id} {last}{nxt}"
        )
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    event_id = _uuid(args.event) if args.event else None
    since = durations.since(args.since, setting="--since") if args.since else None

    async def run(conn: AsyncConnection) -> int:
        return await outbox.replay(
            await db.driver_connection(conn),
            dead=args.dead,
            event_id=event_id,
            job_id=args.job,
            since=since,
            subscription_id=args.subscriber,
        )

    count = db.run_admin(settings, run)
    print(f"{count} deliveries queued again")
    return 0


def cmd_prune(settings: Settings, args: argparse.Namespace) -> int:
    age = durations.parse(args.older_than, setting="--older-than")
    cutoff = datetime.now(UTC) - age

    async def run(conn: AsyncConnection) -> outbox.Pruned:
        return await outbox.prune(await db.driver_connection(conn), cutoff)

    pruned = db.run_admin(settings, run)
    print(
        f"pruned before {cutoff.isoformat(timespec='seconds')}: {pruned.deliveries} delivered deliveries, "
        f"{pruned.events} fully delivered events, {pruned.attempts} delivery attempts, "
        f"{pruned.bodies} raw bodies, {pruned.minutes} per-minute webhook counts, "
        f"{pruned.job_minutes} per-minute job counts, {pruned.attempt_minutes} per-minute attempt counts "
        "(jobs and job history kept)"
    )
    return 0


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ConfigError(f"--event: {text!r} is not an event id (a UUID)") from None
