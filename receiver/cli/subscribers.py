"""`receiver subscribers …`: HTTP subscribers, their filters and secrets."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.core import crypto, db, durations
from receiver.core.config import Settings
from receiver.outbound import health, subscriptions

RATE_HELP = (
    "at most this many attempts, across all publishers, paced evenly: N/s, N/m or N/h, e.g. 50/s (default: no limit)"
)


def register(commands: Any) -> None:
    """Add this module's commands to the `receiver` parser."""
    subs = commands.add_parser("subscribers", help="manage HTTP subscribers")
    actions = subs.add_subparsers(metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add an HTTP subscriber; prints its id and whsec_ secret")
    add.add_argument("url", help="absolute http:// or https:// URL; no user:password@")
    add.add_argument("--secret", help="whsec_… signing secret (generated when not given)")
    add.add_argument(
        "--events",
        help="comma-separated event types, e.g. job.completed,job.failed; job.* and operational.* "
        "(events about the receiver itself, sent only when asked for) are wildcards (default: every job event)",
    )
    add.add_argument("--service", action="append", help="only jobs of this service (repeatable; default: all)")
    add.add_argument("--ed25519", action="store_true", help="also sign with an Ed25519 key pair (v1a)")
    add.add_argument("--rate", help=RATE_HELP)
    add.set_defaults(handler=cmd_subscribers_add)
    update = actions.add_parser("update", help="change a subscriber's rate limit")
    update.add_argument("id")
    update.add_argument("--rate", required=True, help=RATE_HELP + "; none removes the limit")
    update.set_defaults(handler=cmd_subscribers_update)
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


def cmd_subscribers_add(settings: Settings, args: argparse.Namespace) -> int:
    # Before the master key and the database: a bad URL is named in one line (exit 2) even where
    # neither is set up yet. `subscriptions.add` checks again, for every other way in.
    subscriptions.check_url(args.url)
    rate = health.parse_rate(args.rate) if args.rate else None
    events = [e.strip() for e in args.events.split(",") if e.strip()] if args.events else None
    subscriptions.check_event_types(events)
    key = crypto.master_key(settings)
    services = [s.strip() for value in args.service or [] for s in value.split(",") if s.strip()] or None

    async def add(conn: AsyncConnection) -> subscriptions.Added:
        added = await subscriptions.add(
            conn, key, args.url, secret=args.secret, event_types=events, services=services, ed25519=args.ed25519
        )
        if rate is not None:
            await health.set_rate(conn, added.id, rate)
        return added

    added = db.run_admin(settings, add)
    print(f"id          {added.id}")
    print(f"secret      {added.secret}")
    if added.public_key:
        print(f"public key  {added.public_key}")
    print(f"events      {', '.join(events) if events else 'every job event'}")
    print(f"services    {', '.join(services) if services else 'all'}")
    print(f"rate        {rate or 'no limit'}")
    return 0


def cmd_subscribers_update(settings: Settings, args: argparse.Namespace) -> int:
    rate = health.parse_rate(args.rate)
    db.run_admin(settings, lambda conn: health.set_rate(conn, args.id, rate))
    print(f"subscription {args.id}: rate {rate or 'no limit'}")
    return 0


def cmd_subscribers_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = db.run_admin(settings, lambda conn: subscriptions.list_all(conn, count_delivered=True))
    now = datetime.now(UTC)
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
        if row.rate:
            print(f"{'':<21} rate {row.rate}")
        if row.circuit_open_until is not None and row.circuit_open_until > now:
            print(
                f"{'':<21} circuit open until {row.circuit_open_until.isoformat(timespec='seconds')} "
                f"({row.consecutive_failures} failures in a row)"
            )
        elif row.circuit_open_until is not None:
            print(f"{'':<21} circuit half open: the next attempt is its probe ({row.consecutive_failures} failures)")
        elif row.consecutive_failures:
            print(f"{'':<21} failing: {row.consecutive_failures} failures in a row")
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
