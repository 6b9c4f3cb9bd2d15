"""Commands that talk to Doitong's API: submit, reconcile, and the demo that does both."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
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

    demo = commands.add_parser("demo", help="the whole pipeline against the simulator, checking itself")
    demo.add_argument("--jobs", type=int, default=20, help="jobs to submit (default 20)")
    demo.add_argument("--no-live", action="store_true", help="no live view; just the summary")
    demo.add_argument("--timeout", default="2m", help="give up after this long (default 2m)")
    demo.set_defaults(handler=cmd_demo)

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


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    # Imported here: the demo brings the whole server and the simulator (its GraphQL schema is
    # built on import), which `receiver --help` and every other command would pay for.
    from receiver.cli import demo

    if not 1 <= args.jobs <= 1000:
        raise ConfigError("--jobs: use 1 to 1000")
    timeout = durations.parse(args.timeout, setting="--timeout").total_seconds()
    live = not args.no_live and sys.stdout.isatty()
    if live:
        # Retries and refusals are the point of the demo; their log lines would scroll the view away.
        logging.getLogger().setLevel(logging.ERROR)
    outcome = asyncio.run(demo.run(settings, jobs=args.jobs, live=live, timeout=timeout))
    print("\n".join(outcome.lines))
    demo.look_further(outcome)
    return 0 if outcome.ok else 1
