"""Outages the publisher rides out: PostgreSQL away at start-up (with a broker configured) and
later, and JetStream's duplicate window against the retry schedule (real NATS)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.js.api import StreamConfig

from receiver.core.config import Settings
from receiver.outbound import process
from receiver.outbound.publisher import Publisher, duplicate_window
from receiver.outbound.sinks.base import Message
from receiver.outbound.sinks.nats import NatsSink
from tests.brokers import require_broker
from tests.integration.test_brokers import NATS_URL
from tests.outages import DatabaseProxy, messages
from tests.support import MASTER_KEY, eventually, scalar, settings_for


@pytest.fixture
async def nats_stream() -> AsyncIterator[tuple[str, str]]:
    """A stream name and subject prefix of this test's own, deleted afterwards."""
    require_broker("NATS", NATS_URL, 4222, "RECEIVER_NATS_URL")
    suffix = uuid.uuid4().hex[:8]
    stream, prefix = f"RECEIVER_OUTAGE_{suffix}", f"receiveroutage{suffix}"
    yield stream, prefix
    nc = await nats.connect(NATS_URL, allow_reconnect=False)
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jsm().delete_stream(stream)
    await nc.close()


def _down_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in messages(caplog.records, "receiver.outbound.publisher") if "database unavailable" in m]


async def test_publisher_with_a_broker_waits_for_the_database_at_start_and_after(
    database_url: str, tmp_path: Path, nats_stream: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    stream, prefix = nats_stream
    caplog.set_level(logging.INFO, logger="receiver")
    async with DatabaseProxy(database_url) as proxy:
        settings: Settings = settings_for(
            proxy.url,
            tmp_path,
            nats_url=NATS_URL,
            nats_stream=stream,
            nats_subject_prefix=prefix,
            poll_interval=timedelta(milliseconds=100),
            db_timeout=timedelta(seconds=1),
        )
        await proxy.stop()  # PostgreSQL is away when the publisher starts
        stop = asyncio.Event()
        publisher = Publisher(settings, MASTER_KEY, concurrency=4)
        task = asyncio.create_task(publisher.run(stop))
        try:
            await asyncio.sleep(3)
            assert not task.done(), task.exception() if task.done() else None
            reasons = process.unready(publisher)
            assert any(r.startswith("database: ") for r in reasons), reasons
            assert len(_down_lines(caplog)) == 1  # once, not once per attempt
            assert not messages(caplog.records, "psycopg.pool")

            await proxy.start()  # it comes back: the broker's subscription row is written
            assert await eventually(lambda: _broker_row(database_url))
            assert await eventually(lambda: _ready(publisher))
            assert any("database is back" in m for m in messages(caplog.records, "receiver", logging.INFO))

            await proxy.stop()  # and goes away again while the publisher runs
            assert await eventually(lambda: _not_ready(publisher))
            await asyncio.sleep(2)  # ~20 turns at a 100 ms poll interval
            assert len(_down_lines(caplog)) == 2
            assert not task.done()
            await proxy.start()
            assert await eventually(lambda: _ready(publisher), seconds=20)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)  # returns: no exception escapes
    assert not messages(caplog.records, "psycopg.pool")


async def _broker_row(database_url: str) -> bool:
    return bool(scalar(database_url, "SELECT count(*) FROM subscriptions WHERE id = 'nats'"))


async def _ready(publisher: Publisher) -> bool:
    return process.unready(publisher) == []


async def _not_ready(publisher: Publisher) -> bool:
    return any(r.startswith("database: ") for r in process.unready(publisher))


def test_the_duplicate_window_covers_the_whole_retry_schedule(tmp_path: Path) -> None:
    settings = settings_for("postgresql://x@127.0.0.1/x", tmp_path)
    schedule = sum(wait.total_seconds() for wait in settings.retry_schedule)
    # Every wait may be 20 % longer (jitter), and a claim lives one lease.
    assert duplicate_window(settings) >= schedule * 1.2 + settings.lease_timeout.total_seconds()
    assert duplicate_window(settings) > 2 * 24 * 3600  # the default schedule: ~47 h of waits


async def test_a_stream_the_sink_creates_remembers_ids_for_the_window(nats_stream: tuple[str, str]) -> None:
    stream, prefix = nats_stream
    sink = NatsSink(NATS_URL, stream=stream, subject_prefix=prefix, duplicate_window=3 * 3600)
    try:
        await sink.connect()
        message = Message("evt-" + uuid.uuid4().hex, "job.completed", "job-1", b"{}")
        assert (await sink.send(message)).ok
        assert (await sink.send(message)).ok  # the retry of a lost ack: a duplicate ack
    finally:
        await sink.close()
    nc = await nats.connect(NATS_URL, allow_reconnect=False)
    try:
        info = await nc.jsm().stream_info(stream)
    finally:
        await nc.close()
    assert info.config.duplicate_window == 3 * 3600
    assert info.state.messages == 1


async def test_an_existing_stream_with_a_shorter_window_is_warned_about_once(
    nats_stream: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    stream, prefix = nats_stream
    nc = await nats.connect(NATS_URL, allow_reconnect=False)
    try:
        await nc.jsm().add_stream(StreamConfig(name=stream, subjects=[f"{prefix}.>"]))  # the server's 2 minutes
    finally:
        await nc.close()
    sink = NatsSink(NATS_URL, stream=stream, subject_prefix=prefix, duplicate_window=3 * 3600)
    try:
        await sink.connect()
        await sink.connect()
        assert (await sink.send(Message("evt-1", "job.completed", "job-1", b"{}"))).ok
    finally:
        await sink.close()
    warnings = [m for m in messages(caplog.records, "receiver.outbound.sinks.nats") if stream in m]
    assert len(warnings) == 1, warnings
    assert "2m" in warnings[0] and "3h" in warnings[0] and "--dupe-window 10800s" in warnings[0]
