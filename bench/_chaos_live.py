"""bench/chaos.py while it runs: the sender, the faults and the watcher at once, a progress line
now and then, and the drain that waits, with every process up, until each event of the outbox
has reached both sinks (or the drain's time is up: what is missing then is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import _chaos_faults
import _chaos_sender
import _chaos_subscriber
import _databases
import _run
import psycopg

# Events, events not fanned out yet, deliveries pending, and deliveries the database calls done
# to the NATS subscription and to the others (the HTTP subscriber). Operational events (circuit
# breaker news, say) are in the outbox too; they go only to subscriptions that ask for them.
BACKLOG = """
SELECT (SELECT count(*) FROM outbox_events),
       (SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL),
       (SELECT count(*) FROM deliveries WHERE state = 'pending'),
       (SELECT count(*) FROM deliveries WHERE state = 'delivered' AND subscription_id = 'nats'),
       (SELECT count(*) FROM deliveries WHERE state = 'delivered' AND subscription_id <> 'nats')
"""
Backlog = tuple[int, int, int, int, int]


@dataclass
class Timing:
    sending: float = 0.0  # from the first webhook to the last answer and the last fault
    drain: float = 0.0  # from then until every event had arrived at both sinks
    drained: bool = False


async def run(
    sender: _chaos_sender.Sender,
    chaos: _chaos_faults.Chaos,
    faults: list[_chaos_faults.Fault],
    subscriber: _chaos_subscriber.Subscriber,
    url: str,
    *,
    deadline: float,
    drain_timeout: float,
    progress_every: float,
) -> Timing:
    timing = Timing()
    stop = asyncio.Event()
    watcher = asyncio.create_task(chaos.watch(stop), name="watcher")
    started = time.monotonic()
    progress = asyncio.create_task(_progress(sender, chaos, subscriber, url, started, progress_every))
    try:
        work = asyncio.gather(sender.run(), chaos.run(faults))
        try:
            await asyncio.wait_for(work, deadline)
        except TimeoutError:
            raise _run.BenchError(
                f"sending did not finish within {deadline:.0f} s: {sender.tally.jobs_done:,} of "
                f"{sender.jobs:,} jobs answered, {chaos.tally.total} faults made"
            ) from None
        timing.sending = time.monotonic() - started
        _run.log(f"sent in {timing.sending:.0f} s; draining (at most {drain_timeout:.0f} s)")
        timing.drained = await _drain(subscriber, url, drain_timeout)
        timing.drain = time.monotonic() - started - timing.sending
    finally:
        progress.cancel()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
        await watcher
    return timing


async def _drain(subscriber: _chaos_subscriber.Subscriber, url: str, timeout: float) -> bool:
    """Until the outbox is fanned out, nothing is pending, and each sink has seen (at least) as
    many distinct events as the database says were delivered to it; False when `timeout` ran
    out first."""
    deadline = time.monotonic() + timeout
    while True:
        backlog = await _backlog(url)
        stats = await asyncio.to_thread(subscriber.stats)
        if backlog is not None:
            _events, undispatched, pending, to_nats, to_http = backlog
            distinct = stats["distinct"]
            if not undispatched and not pending and distinct["http"] >= to_http and distinct["nats"] >= to_nats:
                return True
        if time.monotonic() > deadline:
            _run.log(
                f"drain: time is up (events, undispatched, pending, delivered to NATS and HTTP: {backlog}; "
                f"subscriber: {stats})"
            )
            return False
        await asyncio.sleep(0.5)


async def _backlog(url: str) -> Backlog | None:
    return await asyncio.to_thread(_backlog_now, url)


def _backlog_now(url: str) -> Backlog | None:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute(BACKLOG).fetchone()
    except psycopg.Error:
        return None
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


async def _progress(
    sender: _chaos_sender.Sender,
    chaos: _chaos_faults.Chaos,
    subscriber: _chaos_subscriber.Subscriber,
    url: str,
    started: float,
    every: float,
) -> None:
    while True:
        await asyncio.sleep(every)
        tally = sender.tally
        backlog = await _backlog(url)
        stats: dict[str, Any] = await asyncio.to_thread(subscriber.stats)
        outbox = "outbox unreachable" if backlog is None else f"outbox {backlog[0]:,}, pending {backlog[2]:,}"
        _run.log(
            f"{time.monotonic() - started:5.0f} s: jobs {tally.jobs_done:,}/{sender.jobs:,}, "
            f"2xx {tally.acked:,}, retried {tally.server_errors + tally.connection_errors:,}, "
            f"faults {chaos.tally.total}, {outbox}, "
            f"at the subscriber http {stats['distinct']['http']:,} nats {stats['distinct']['nats']:,}"
        )


@dataclass
class Snapshot:
    """What the database holds at the end, for the checks."""

    seqs: dict[str, int]  # event id -> outbox seq, for the order check
    statuses: dict[str, str]  # job id -> status
    doubled: int  # (job, type) with more than one outbox event
    undelivered: int  # deliveries pending or dead


def snapshot(url: str) -> Snapshot:
    return Snapshot(
        {str(row[0]): int(row[1]) for row in _rows(url, "SELECT id, seq FROM outbox_events")},
        {str(row[0]): str(row[1]) for row in _rows(url, "SELECT id, status FROM jobs")},
        int(
            _databases.query_one(
                url, "SELECT count(*) FROM (SELECT 1 FROM outbox_events GROUP BY job_id, type HAVING count(*) > 1) d"
            )
        ),
        int(_databases.query_one(url, "SELECT count(*) FROM deliveries WHERE state <> 'delivered'")),
    )


def _rows(url: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement).fetchall()
