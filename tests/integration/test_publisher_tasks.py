"""The publisher's background tasks are watched: a failure is logged once, then the task is
started again (LISTEN) or the publisher stops with an error (the fan-out)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from receiver.core import background
from receiver.core.config import Settings
from receiver.outbound import outbox, subscriptions
from receiver.outbound.publisher import Publisher
from tests.subscriber import Subscriber
from tests.support import (
    MASTER_KEY,
    Receiver,
    admin,
    doitong_body,
    eventually,
    publishing,
    running,
    scalar,
    settings_for,
)

PUBLISHER_LOG = "receiver.outbound.publisher"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # A poll interval far longer than the tests wait: only a NOTIFY (through LISTEN) brings
    # a new event out in time.
    return settings_for(
        database_url,
        tmp_path,
        poll_interval=timedelta(seconds=60),
        http_timeout=timedelta(seconds=5),
        lease_timeout=timedelta(seconds=10),
        deny_networks=(),
    )


@pytest.fixture
async def subscriber(settings: Settings) -> AsyncIterator[Subscriber]:
    server = await Subscriber().start()
    assert settings.database_url is not None
    await admin(settings.database_url, lambda c: subscriptions.add(c, MASTER_KEY, server.url()))
    yield server
    await server.stop()


@pytest.fixture
async def receiver(settings: Settings) -> AsyncIterator[Receiver]:
    async with running(settings) as server:
        yield server


def _failures(caplog: pytest.LogCaptureFixture, task: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == PUBLISHER_LOG and r.levelno >= logging.ERROR and task in r.getMessage() and r.exc_info
    ]


async def test_a_listener_that_fails_is_logged_and_started_again(
    settings: Settings,
    receiver: Receiver,
    subscriber: Subscriber,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    notified = Publisher._notified

    def fails_once(self: Publisher) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first call is right after LISTEN, on the listener's task
            raise RuntimeError("injected listener failure")
        notified(self)

    monkeypatch.setattr(Publisher, "_notified", fails_once)
    async with publishing(settings):

        async def listening_again() -> bool:
            return calls >= 2

        assert await eventually(listening_again)
        await receiver.post(doitong_body("job_after_restart", "completed"))
        got = await subscriber.wait_for(1, timeout=10)  # the NOTIFY reached a LISTEN again
    assert len(got) == 1
    failures = _failures(caplog, "outbox-listen")
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "starting it again" in failures[0].getMessage()
    assert failures[0].exc_info is not None and isinstance(failures[0].exc_info[1], RuntimeError)
    assert settings.database_url is not None
    assert scalar(settings.database_url, "SELECT state FROM deliveries") == "delivered"


async def test_a_fan_out_that_fails_unexpectedly_stops_the_publisher_with_an_error(
    settings: Settings,
    receiver: Receiver,
    subscriber: Subscriber,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> outbox.FannedOut:
        raise RuntimeError("injected fan-out bug")

    monkeypatch.setattr(outbox, "fan_out", broken)
    await receiver.post(doitong_body("job_never_fanned", "completed"))
    publisher = Publisher(settings, MASTER_KEY, concurrency=4)
    stop = asyncio.Event()
    with pytest.raises(background.TaskFailed, match=r"outbox-fan-out failed .*injected fan-out bug"):
        await asyncio.wait_for(publisher.run(stop), 15)
    assert stop.is_set()  # the publisher stopped the way SIGTERM stops it (drained, closed)
    failures = _failures(caplog, "outbox-fan-out")
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].exc_info is not None and isinstance(failures[0].exc_info[1], RuntimeError)
