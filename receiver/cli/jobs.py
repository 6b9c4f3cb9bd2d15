"""Commands that talk to Doitong's API: submit and reconcile."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import psycopg

from receiver.core import db, durations
from receiver.core.config import Settings
from receiver.core.errors import ConfigError
from receiver.inbound import endpoints
from receiver.jobs import doitong, reconcile, submit


def register(commands: Any) -> None:
    submit = commands.add_parser("submit", help="generate a video at Doitong and track it here")
    submit.add_argument("--text", required=True, help="what the avatar says")
    submit.add_argument("--avatar", required=True, help="avatar id, e.g. professional-1")
    submit.add_argument("--voice", help="voice, e.g. en-US-neural")
    submit.add_argument("--service", default="hedra", help="provider service (default hedra)")
    submit.add_argument("--client-reference", help="your own reference (order, customer, ...)")
    submit.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    submit.add_argument("--endpoint", default=endpoints.DEFAULT, help="the endpoint Doitong calls back (default)")
    submit.set_defaults(handler=cmd_submit)

    rec = commands.add_parser("reconcile", help="ask Doitong about jobs whose webhooks are overdue")
    rec.add_argument("--stale-after", help="only jobs unchanged this long (env RECEIVER_STALE_AFTER, default 15m)")
    rec.add_argument("--limit", type=int, default=500, help="jobs to look up at most (default 500)")
    rec.set_defaults(handler=cmd_reconcile)


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    tags: dict[str, str] = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--tag: {item!r} is not KEY=VALUE")
        tags[key] = value
    settings.require_database_url()
    try:
        job = asyncio.run(
            submit.submit(
                settings,
                text=args.text,
                avatar=args.avatar,
                voice=args.voice,
                service=args.service,
                client_reference=args.client_reference,
                tags=tags or None,
                endpoint=args.endpoint,
            )
        )
    except doitong.ProviderError as exc:
        print(f"receiver: {exc}")
        return 1
    print(f"job         {job.id}")
    print(f"status      {job.status}")
    print(f"credits     {job.credit_cost if job.credit_cost is not None else 'unknown'}")
    print(f"webhook     {job.webhook_url}")
    return 0


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    stale = durations.parse(args.stale_after, setting="--stale-after") if args.stale_after else settings.stale_after

    async def go() -> reconcile.Round:
        async with (
            submit.provider_client(settings) as api,
            await psycopg.AsyncConnection.connect(
                db.libpq_url(settings.require_database_url()), autocommit=True
            ) as conn,
        ):
            return await reconcile.reconcile_once(conn, api, stale_after=stale, limit=max(1, args.limit))

    done = asyncio.run(go())
    print(
        f"{done.checked} checked, {done.changed} changed, {done.events} events emitted, "
        f"{done.unknown} unknown to Doitong, {done.errors} errors"
    )
    return 1 if done.errors and not done.changed else 0
