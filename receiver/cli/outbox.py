"""Commands for the outbound side: publish, subscribers, deliveries, replay, prune."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.core import config, crypto, db, durations, tables
from receiver.core.config import Settings
from receiver.core.errors import ConfigError
from receiver.outbound import outbox, process, subscriptions


def register(commands: Any) -> None:
    """Add this module's commands to the `receiver` parser."""
    publish = commands.add_parser("publish", help="drain the outbox to subscribers and brokers")
    publish.add_argument("--concurrency", type=int, help="sends in flight at once (RECEIVER_PUBLISH_CONCURRENCY, 64)")
    publish.add_argument("--metrics-port", type=int, help="port for /healthz and /metrics (default 9091; 0 = off)")
    publish.set_defaults(handler=cmd_publish)

    subs = commands.add_parser("subscribers", help="manage HTTP subscribers")
    actions = subs.add_subparsers(metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add an HTTP subscriber; prints its id and whsec_ secret")
    add.add_argument("url")
    add.add_argument("--secret", help="whsec_… signing secret (generated when not given)")
    add.add_argument("--events", help="comma-separated event types, e.g. job.completed,job.failed (default: all)")
    add.add_argument("--service", action="append", help="only jobs of this service (repeatable; default: all)")
    add.add_argument("--ed25519", action="store_true", help="also sign with an Ed25519 key pair (v1a)")
    add.set_defaults(handler=cmd_subscribers_add)
    actions.add_parser("list", help="list subscribers and their delivery counts").set_defaults(
        handler=cmd_subscribers_list
    )
    for name, handler, text in (
        ("disable", cmd_subscribers_disable, "stop sending; deliveries wait until enable"),
        ("enable", cmd_subscribers_enable, "resume sending, including what waited"),
        ("remove", cmd_subscribers_remove, "delete the subscriber and its deliveries"),
        ("rotate-secret", cmd_subscribers_rotate, "new whsec_ secret; the old one keeps signing for --grace"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("id")
        if name == "rotate-secret":
            sub.add_argument("--grace", default="24h", help="how long requests carry both signatures (24h)")
        sub.set_defaults(handler=handler)

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


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:

    concurrency = args.concurrency if args.concurrency is not None else settings.publish_concurrency
    if concurrency < 1:
        raise ConfigError("--concurrency: use 1 or more")
    port = config.check_port(
        args.metrics_port if args.metrics_port is not None else settings.metrics_port, setting="--metrics-port"
    )
    settings.require_database_url()
    # uvloop, as `receiver serve` runs on: a publisher spends most of its time in the event loop.
    loop_factory = None
    if sys.platform != "win32":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(process.publish(settings, concurrency=concurrency, metrics_port=port))
    return 0


def cmd_subscribers_add(settings: Settings, args: argparse.Namespace) -> int:
    key = crypto.master_key(settings)
    events = [e.strip() for e in args.events.split(",") if e.strip()] if args.events else None
    services = [s.strip() for value in args.service or [] for s in value.split(",") if s.strip()] or None
    added = db.run_admin(
        settings,
        lambda conn: subscriptions.add(
            conn, key, args.url, secret=args.secret, event_types=events, services=services, ed25519=args.ed25519
        ),
    )
    print(f"id          {added.id}")
    print(f"secret      {added.secret}")
    if added.public_key:
        print(f"public key  {added.public_key}")
    print(f"events      {', '.join(events) if events else 'all'}")
    print(f"services    {', '.join(services) if services else 'all'}")
    return 0


def cmd_subscribers_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = db.run_admin(settings, subscriptions.list_all)
    print(f"{'ID':<21} {'KIND':<5} {'STATE':<9} {'PENDING':>7} {'DEAD':>5} {'DELIVERED':>9}  URL / FILTERS")
    for row in rows:
        filters = []
        if row.event_types:
            filters.append("events=" + ",".join(row.event_types))
        if row.services:
            filters.append("services=" + ",".join(row.services))
        line = f"{row.id:<21} {row.kind:<5} {row.state:<9} {row.pending:>7} {row.dead:>5} {row.delivered:>9}  {row.url}"
        print(line + ("  " + " ".join(filters) if filters else ""))
        if row.disabled_reason and row.state == "disabled":
            print(f"{'':<21} disabled: {row.disabled_reason}")
    return 0


def cmd_subscribers_disable(settings: Settings, args: argparse.Namespace) -> int:
    db.run_admin(settings, lambda conn: subscriptions.set_enabled(conn, args.id, False))
    print(f"subscription {args.id} disabled; its deliveries wait until `receiver subscribers enable {args.id}`")
    return 0


def cmd_subscribers_enable(settings: Settings, args: argparse.Namespace) -> int:
    db.run_admin(settings, lambda conn: subscriptions.set_enabled(conn, args.id, True))
    print(f"subscription {args.id} enabled")
    return 0


def cmd_subscribers_remove(settings: Settings, args: argparse.Namespace) -> int:
    db.run_admin(settings, lambda conn: subscriptions.remove(conn, args.id))
    print(f"subscription {args.id} removed")
    return 0


def cmd_subscribers_rotate(settings: Settings, args: argparse.Namespace) -> int:
    grace = durations.parse(args.grace, setting="--grace")
    key = crypto.master_key(settings)
    secret = db.run_admin(settings, lambda conn: subscriptions.rotate_secret(conn, key, args.id, grace))
    print(f"secret      {secret}")
    print(f"requests carry signatures for both secrets for {durations.format(grace)}")
    return 0


def cmd_deliveries(settings: Settings, args: argparse.Namespace) -> int:
    d, o = tables.deliveries, tables.outbox_events
    query = (
        sa.select(
            d.c.id,
            d.c.state,
            d.c.subscription_id,
            o.c.type,
            d.c.job_id,
            d.c.event_id,
            d.c.attempts,
            d.c.next_attempt_at,
            d.c.last_status,
            d.c.last_error,
        )
        .select_from(d.join(o, o.c.id == d.c.event_id))
        .order_by(d.c.id.desc())
        .limit(max(1, args.limit))
    )
    if args.state:
        query = query.where(d.c.state == args.state)
    if args.subscriber:
        query = query.where(d.c.subscription_id == args.subscriber)
    if args.job:
        query = query.where(d.c.job_id == args.job)

    async def fetch(conn: AsyncConnection) -> list[Any]:
        return list(await conn.execute(query))

    rows = db.run_admin(settings, fetch)
    print(f"{'ID':>8} {'STATE':<9} {'SUBSCRIBER':<21} {'TYPE':<16} {'ATTEMPTS':>8}  JOB / EVENT / LAST")
    for r in rows:
        last = f"{r.last_status or ''} {r.last_error or ''}".strip()
        nxt = f" next {r.next_attempt_at.isoformat(timespec='seconds')}" if r.state == "pending" else ""
        print(
            f"{r.id:>8} {r.state:<9} {r.subscription_id:<21} {r.type:<16} {r.attempts:>8}  "
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

    async def run(conn: AsyncConnection) -> tuple[int, int, int]:
        return await outbox.prune(await db.driver_connection(conn), cutoff)

    deliveries, events, bodies = db.run_admin(settings, run)
    print(
        f"pruned before {cutoff.isoformat(timespec='seconds')}: {deliveries} delivered deliveries, "
        f"{events} fully delivered events, {bodies} raw bodies (jobs and job history kept)"
    )
    return 0


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ConfigError(f"--event: {text!r} is not an event id (a UUID)") from None
