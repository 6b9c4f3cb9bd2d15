"""`receiver demo`: the whole pipeline on one machine, checking itself.

An embedded PostgreSQL (or DATABASE_URL), the receiver with its publisher, the
Doitong simulator with every fault knob on (duplicates, reordering, dropped and
forged webhooks, failed jobs, API errors), and a demo subscriber that verifies
every Standard Webhooks signature. It submits N jobs, shows their progress, and
ends with a summary that checks: every job reached a final state, every event
reached the subscriber, and no event had a duplicate side effect.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import shutil
import socket
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import standardwebhooks
from aiohttp import web
from prometheus_client import REGISTRY

from receiver.app import create_app
from receiver.core import db, embedded_postgres, embedded_uvicorn, migrate
from receiver.core.config import Settings
from receiver.inbound import endpoints
from receiver.jobs import doitong, submit
from receiver.outbound import subscriptions
from receiver.simulator import Account, SimulatorConfig
from receiver.simulator import running as simulating

AVATARS = ("professional-1", "casual-2", "presenter-3")
LINES = (
    "Hello, welcome to our platform!",
    "Your order has shipped and will arrive on Thursday.",
    "Thanks for joining the webinar, here is a short recap of what we covered today.",
)


@dataclass
class DemoSubscriber:
    """Verifies each request's `v1` signature as a subscriber would, with the Standard
    Webhooks library; processes each event id once, counts the rest."""

    webhook: standardwebhooks.Webhook | None = None  # set once the subscription (and its secret) exists
    processed: dict[str, dict[str, Any]] = field(default_factory=dict)
    redelivered: int = 0
    bad_signatures: int = 0
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self._verified(body, dict(request.headers)):
            self.bad_signatures += 1
            return web.Response(status=401)
        event_id = request.headers["webhook-id"]
        if event_id in self.processed:
            self.redelivered += 1  # at least once: a repeat is acknowledged, not processed again
        else:
            self.processed[event_id] = orjson.loads(body)
        return web.Response(status=200)

    def _verified(self, body: bytes, headers: dict[str, str]) -> bool:
        if self.webhook is None:
            return False
        try:
            self.webhook.verify(body, headers, json_parse=False)
        except (standardwebhooks.WebhookVerificationError, ValueError):
            # The library raises a bare ValueError (or UnicodeDecodeError) on a malformed
            # signature header or body; to a subscriber that is a bad signature all the same.
            return False
        return True


@dataclass
class Outcome:
    ok: bool
    lines: list[str]
    figures: dict[str, float] = field(default_factory=dict)
    database_url: str = ""
    # RECEIVER_HOME of the embedded PostgreSQL the demo started (it stops when the demo's process
    # exits); None when DATABASE_URL named a server that outlives the demo.
    embedded_home: Path | None = None


async def run(
    settings: Settings,
    *,
    jobs: int,
    live: bool,
    timeout: float = 120.0,
    latency: float = 1.5,
    parallel: int = 1,
) -> Outcome:
    """Run the demo; `parallel` submissions at once raise the rate for bench/simulate.py."""
    async with AsyncExitStack() as stack:
        embedded = settings.database_url is None
        settings = await _database(settings, stack)
        secret = "whsec_demo_" + secrets.token_urlsafe(12)
        sim_config = SimulatorConfig(
            accounts=(Account("sk_demo", plan="enterprise", credits=10**9),),
            webhook_secret=secret,
            latency=latency,
            failure_rate=0.1,
            duplicate_rate=0.3,
            reorder_rate=0.3,
            drop_rate=0.2,
            bad_signature_rate=0.3,
            fail_rate=0.1,
            retry_base=0.2,
        )
        simulator, api_url = await stack.enter_async_context(simulating(sim_config))
        subscriber = await _start_subscriber(stack)
        port = _free_port()
        settings = settings.replace(
            webhook_secrets=(secret,),
            port=port,
            public_url=f"http://127.0.0.1:{port}",
            doitong_api_url=api_url,
            doitong_api_key="sk_demo",
            stale_after=timedelta(seconds=3),
            reconcile_interval=timedelta(seconds=1),
            retry_schedule=(timedelta(milliseconds=200),) * 10,
            poll_interval=timedelta(milliseconds=200),
            deny_networks=(),
        )
        from receiver.core import crypto

        added = await _subscribe(settings, crypto.master_key(settings), subscriber.url)
        subscriber.handler.webhook = standardwebhooks.Webhook(added.secret)
        await stack.enter_async_context(
            embedded_uvicorn.serving(
                create_app(settings, with_publisher=True), host="127.0.0.1", port=settings.port, startup_timeout=15
            )
        )

        rejected_before = _rejected()
        started = time.monotonic()
        submitted = await _submit(settings, jobs, parallel=parallel)
        database_url = settings.require_database_url()
        while True:
            view = await _view(database_url, subscriber.handler, simulator.stats(), jobs)
            if live:
                sys.stdout.write("\x1b[2J\x1b[H" + view.render(time.monotonic() - started) + "\n")
                sys.stdout.flush()
            if view.done or time.monotonic() - started > timeout:
                break
            await asyncio.sleep(0.5)
        await simulator.wait_idle(5)
        rejected = _rejected() - rejected_before
        outcome = _summary(
            view, submitted, database_url, subscriber.handler, simulator.stats(), rejected, time.monotonic() - started
        )
        outcome.embedded_home = settings.home.resolve() if embedded else None
        return outcome


def _rejected() -> float:
    """Webhooks this process answered 401 (the receiver runs in it)."""
    value = REGISTRY.get_sample_value(
        "receiver_webhooks_total", {"endpoint": endpoints.DEFAULT, "outcome": "unauthorized"}
    )
    return value or 0.0


@dataclass
class _Served:
    url: str
    handler: DemoSubscriber


async def _database(settings: Settings, stack: AsyncExitStack) -> Settings:
    if settings.database_url is None:
        name = f"demo_{int(time.time())}"
        # The embedded server stops when this process exits (its atexit hook).
        _server, url = embedded_postgres.start(settings.home, name)
        settings = settings.replace(database_url=url)
    await asyncio.to_thread(migrate.upgrade, settings.require_database_url())
    return settings


async def _start_subscriber(stack: AsyncExitStack) -> _Served:
    handler = DemoSubscriber()
    app = web.Application()
    app.router.add_post("/events", handler.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return _Served(f"http://127.0.0.1:{port}/events", handler)


async def _subscribe(settings: Settings, key: bytes, url: str) -> subscriptions.Added:
    engine = db.create_engine(settings.require_database_url(), pool_size=1)
    try:
        async with db.begin(engine) as conn:
            return await subscriptions.add(conn, key, url)
    finally:
        await engine.dispose()


async def _submit(settings: Settings, count: int, *, parallel: int) -> list[str]:
    ids: list[str] = []
    gate = asyncio.Semaphore(parallel)
    api = doitong.DoitongClient(settings.doitong_api_url, "sk_demo", backoff=0.2)
    engine = db.create_engine(settings.require_database_url(), pool_size=4, timeout=settings.db_timeout)

    async def one(index: int) -> None:
        async with gate:
            job = await submit.submit(
                settings,
                text=LINES[index % len(LINES)],
                avatar=AVATARS[index % len(AVATARS)],
                voice="en-US-neural",
                client_reference=f"demo-order-{index + 1:03d}",
                tags={"demo": "true"},
                doitong=api,
                engine=engine,
            )
            ids.append(job.id)

    try:
        await asyncio.gather(*(one(index) for index in range(count)))
    finally:
        await api.close()
        await engine.dispose()
    return ids


@dataclass
class _View:
    statuses: Counter[str]
    events: int
    delivered: int
    pending: int
    processed: int
    redelivered: int
    replays: int
    redeliveries: int
    forged_sent: int
    reconciled: int
    jobs: int

    @property
    def finished(self) -> int:
        return self.statuses["completed"] + self.statuses["failed"]

    @property
    def done(self) -> bool:
        return self.finished == self.jobs and self.events > 0 and self.processed == self.events and self.pending == 0

    def render(self, elapsed: float) -> str:
        bar = "#" * int(30 * self.finished / max(1, self.jobs))
        return "\n".join(
            [
                f"doitong-receiver demo  {elapsed:5.1f}s",
                "",
                f"jobs       [{bar:<30}] {self.finished}/{self.jobs} final  "
                + "  ".join(f"{k}={v}" for k, v in sorted(self.statuses.items())),
                f"events     {self.events} created, {self.delivered} delivered, {self.pending} pending",
                f"subscriber {self.processed} processed once, {self.redelivered} repeats acknowledged",
                f"absorbed   {self.replays} replayed deliveries, {self.redeliveries} redeliveries under new keys",
                f"refused    {self.forged_sent} forged webhooks sent by the simulator",
                f"recovered  {self.reconciled} jobs whose final webhook was dropped, found by reconciliation",
            ]
        )


async def _view(database_url: str, subscriber: DemoSubscriber, stats: dict[str, Any], jobs: int) -> _View:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        statuses = Counter(
            {
                row[0]: row[1]
                for row in await (await conn.execute("SELECT status, count(*) FROM jobs GROUP BY 1")).fetchall()
            }
        )
        row = await (
            await conn.execute(
                "SELECT (SELECT count(*) FROM outbox_events),"
                " (SELECT count(*) FROM deliveries WHERE state = 'delivered'),"
                " (SELECT count(*) FROM deliveries WHERE state <> 'delivered'),"
                " (SELECT coalesce(sum(replay_count), 0) FROM inbound_webhooks),"
                " (SELECT count(*) FROM job_events WHERE source = 'webhook' AND NOT applied),"
                " (SELECT count(DISTINCT job_id) FROM job_events WHERE source = 'poll' AND applied)"
            )
        ).fetchone()
    assert row is not None
    return _View(
        statuses=statuses,
        events=row[0],
        delivered=row[1],
        pending=row[2],
        processed=len(subscriber.processed),
        redelivered=subscriber.redelivered,
        replays=int(row[3]),
        redeliveries=row[4],
        forged_sent=int(stats["webhooks"]["forged"]),
        reconciled=row[5],
        jobs=jobs,
    )


def _summary(
    view: _View,
    submitted: list[str],
    database_url: str,
    subscriber: DemoSubscriber,
    stats: dict[str, Any],
    rejected: float,
    took: float,
) -> Outcome:
    per_job: Counter[tuple[str, str]] = Counter(
        (event["data"]["id"], event["type"]) for event in subscriber.processed.values()
    )
    checks = [
        (f"every job reached a final state ({view.finished}/{len(submitted)})", view.finished == len(submitted)),
        (
            f"every event reached the subscriber ({view.processed}/{view.events})",
            view.processed == view.events and view.pending == 0,
        ),
        (
            "no duplicate side effect (each job's status processed once)",
            all(count == 1 for count in per_job.values()) and subscriber.bad_signatures == 0,
        ),
        (
            f"every forged webhook was refused ({int(rejected)} answered 401, {stats['webhooks']['forged']} forged)",
            rejected == stats["webhooks"]["forged"],
        ),
    ]
    ok = all(passed for _, passed in checks)
    lines = [
        "",
        view.render(took),
        "",
        "self-check",
        *[f"  [{'ok' if passed else 'FAIL'}] {text}" for text, passed in checks],
        "",
        f"{'PASSED' if ok else 'FAILED'} in {took:.1f}s",
        "",
    ]
    figures = {
        "seconds": took,
        "jobs": float(len(submitted)),
        "final": float(view.finished),
        "events": float(view.events),
        "lost": float(view.events - view.processed),
        "duplicates": float(sum(count - 1 for count in per_job.values())),
        "redelivered": float(subscriber.redelivered),
        "webhooks_sent": float(stats["webhooks"]["attempts"]),
        "forged": float(stats["webhooks"]["forged"]),
        "rejected": rejected,
        "reconciled": float(view.reconciled),
    }
    return Outcome(ok, lines, figures, database_url=database_url)


QUERIES = (
    "SELECT * FROM job_history ORDER BY job_id, event_seq;",
    "SELECT job_id, status, provider_seconds, receive_delay_seconds FROM job_latency;",
    "SELECT endpoint, idempotency_key, replay_count FROM inbound_webhooks WHERE replay_count > 0;",
    "SELECT state, count(*), max(attempts) FROM deliveries GROUP BY state;",
)


def look_further(outcome: Outcome) -> None:
    """Print how to explore the demo's database, in lines that work when pasted.

    The embedded PostgreSQL stops when the demo exits. In a terminal (stdin and stdout) the demo
    holds it up until Enter; anywhere else (a pipe, CI, a test) nobody would press Enter, so the
    demo ends and prints the command that starts the same server again (`receiver run` on the
    same RECEIVER_HOME)."""
    psql = f"{_psql()} {shlex.quote(db.libpq_url(outcome.database_url))}"
    queries = [f"  {query}" for query in QUERIES]
    hold = outcome.embedded_home is not None and _terminal()
    if outcome.embedded_home is None:
        lines = ["look further:", f"  {psql}", *queries]
    elif hold:
        lines = ["look further, while the demo keeps its database up:", f"  {psql}", *queries]
    else:
        home = shlex.quote(str(outcome.embedded_home))
        lines = [
            "look further: the demo's database stopped with it; this starts it again (and the receiver):",
            f"  RECEIVER_HOME={home} {_receiver_command()} run",
            "(it serves on RECEIVER_PORT, 8080 by default: add --port N when that port is taken)",
            "then, in another terminal:",
            f"  {psql}",
            *queries,
        ]
    print("\n".join(lines), flush=True)
    if hold:
        # Printed here: input() writes its prompt to stderr when both streams are terminals.
        print("\npress Enter to stop the database and end the demo ", end="", flush=True)
        try:
            input()
        except (EOFError, KeyboardInterrupt):
            print()


def _terminal() -> bool:
    return all(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stdout))


def _psql() -> str:
    """psql from PATH, else the one the embedded PostgreSQL ships with (no client installed)."""
    found = shutil.which("psql")
    return "psql" if found is not None else shlex.quote(str(embedded_postgres.bundled_psql()))


def _receiver_command() -> str:
    """How to start `receiver` again from any folder: the bare name when PATH finds this very
    program, else its absolute path (`make demo` runs .venv/bin/receiver; `python -m receiver`
    has no script of its own)."""
    script = Path(sys.argv[0])
    if script.name != "receiver":
        return f"{shlex.quote(sys.executable)} -m receiver"
    found = shutil.which("receiver")
    if found is not None and Path(found).resolve() == script.resolve():
        return "receiver"
    return shlex.quote(str(script.absolute()))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
