"""`receiver endpoints …`: the inbound endpoints and their secrets."""

from __future__ import annotations

import argparse
from datetime import UTC
from typing import Any

from receiver.core import crypto, db, durations
from receiver.core.config import Settings
from receiver.inbound import endpoints


def register(commands: Any) -> None:
    """Add this module's commands to the `receiver` parser."""
    eps = commands.add_parser("endpoints", help="manage webhook endpoints and their secrets")
    eps_commands = eps.add_subparsers(metavar="ACTION", required=True)
    add = eps_commands.add_parser("add", help="add an endpoint: POST /webhooks/doitong/NAME")
    add.add_argument("name")
    add.add_argument("--secret", required=True, help="the webhook secret Doitong signs with")
    add.set_defaults(handler=cmd_endpoints_add)
    lst = eps_commands.add_parser("list", help="list endpoints")
    lst.set_defaults(handler=cmd_endpoints_list)
    rot = eps_commands.add_parser("rotate", help="switch to a new secret; the old one stays valid for --grace")
    rot.add_argument("name")
    rot.add_argument("--secret", required=True)
    rot.add_argument("--grace", default="24h", help="how long the old secret stays valid (default 24h)")
    rot.set_defaults(handler=cmd_endpoints_rotate)
    rem = eps_commands.add_parser("remove", help="remove an endpoint (its history stays)")
    rem.add_argument("name")
    rem.set_defaults(handler=cmd_endpoints_remove)


def cmd_endpoints_add(settings: Settings, args: argparse.Namespace) -> int:
    key = crypto.master_key(settings)
    db.run_admin(settings, lambda conn: endpoints.add(conn, key, args.name, args.secret))
    print(f"endpoint {args.name!r} added: POST /webhooks/doitong/{args.name}")
    return 0


def cmd_endpoints_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = db.run_admin(settings, endpoints.list_all)
    print(f"{'NAME':<24} {'ACTIVE SECRETS':>14}  {'GRACE ENDS':<25} UPDATED")
    if settings.webhook_secrets:
        print(f"{'default (env)':<24} {len(settings.webhook_secrets):>14}  {'-':<25} DOITONG_WEBHOOK_SECRET")
    for row in rows:
        grace = row.grace_ends_at.isoformat(timespec="seconds") if row.grace_ends_at else "-"
        print(f"{row.name:<24} {row.active_secrets:>14}  {grace:<25} {row.updated_at.isoformat(timespec='seconds')}")
    return 0


def cmd_endpoints_rotate(settings: Settings, args: argparse.Namespace) -> int:
    grace = durations.parse(args.grace, setting="--grace")
    key = crypto.master_key(settings)
    ends = db.run_admin(settings, lambda conn: endpoints.rotate(conn, key, args.name, args.secret, grace))
    print(
        f"endpoint {args.name!r} rotated; the previous secret stays valid until "
        f"{ends.astimezone(UTC).isoformat(timespec='seconds')} ({durations.format(grace)})"
    )
    return 0


def cmd_endpoints_remove(settings: Settings, args: argparse.Namespace) -> int:
    db.run_admin(settings, lambda conn: endpoints.remove(conn, args.name))
    print(f"endpoint {args.name!r} removed; its webhooks answer 404 within seconds, history stays")
    return 0
