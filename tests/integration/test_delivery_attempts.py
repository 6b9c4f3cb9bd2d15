"""Every delivery attempt gets a row in delivery_attempts, written with its outcome; prune clears them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from receiver.core.config import Settings
from receiver.outbound import outbox, subscriptions
from tests.subscriber import Subscriber
from tests.support import (
    MASTER_KEY,
    Receiver,
    admin,
    doitong_body,
    eventually,
    execute,
    publishing,
    query,
    running,
    scalar,
    settings_for,
)


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    server = await Subscriber(delay=0.02).start()
    yield server
    await server.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return settings_for(
        database_url,
        tmp_path,
        retry_schedule=(timedelta(milliseconds=100), timedelta(milliseconds=100)),
        poll_interval=timedelta(milliseconds=50),
        http_timeout=timedelta(seconds=5),
        lease_timeout=timedelta(seconds=10),
        deny_networks=(),
    )


@pytest.fixture
async def receiver(settings: Settings) -> AsyncIterator[Receiver]:
    async with running(settings) as server:
        yield server


async def test_each_attempt_is_kept_with_its_time_status_and_outcome(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    assert settings.database_url is not None
    url = settings.database_url
    subscriber.script["/flaky"] = [500, 503, 200]
    subscriber.script["/dead"] = [500, 500, 500]
    flaky = await admin(url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url("/flaky")))
    dead = await admin(url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url("/dead")))
    before = datetime.now(UTC)
    await receiver.post(doitong_body("job_" + uuid.uuid4().hex[:8], "completed"))

    async def settled() -> bool:
        return scalar(url, "SELECT count(*) FROM deliveries WHERE state <> 'pending'") == 2

    async with publishing(settings):
        assert await eventually(settled)

    rows = query(
        url,
        "SELECT a.subscription_id, a.attempt, a.outcome, a.status, a.error, a.duration_ms, a.at"
        " FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id"
        " ORDER BY a.subscription_id, a.id",
    )
    by_subscriber = {sub: [r[1:5] for r in rows if r[0] == sub] for sub in (flaky.id, dead.id)}
    assert by_subscriber[flaky.id] == [
        (1, "retrying", 500, "HTTP 500"),
        (2, "retrying", 503, "HTTP 503"),
        (3, "delivered", 200, None),
    ]
    assert by_subscriber[dead.id] == [
        (1, "retrying", 500, "HTTP 500"),
        (2, "retrying", 500, "HTTP 500"),
        (3, "dead", 500, "HTTP 500"),
    ]
    # Timed by the publisher: the subscriber waits 20 ms before answering, and the attempts
    # started after the webhook, in order.
    assert all(r[5] is not None and r[5] >= 15 for r in rows)
    flaky_times = [r[6] for r in rows if r[0] == flaky.id]
    assert before <= flaky_times[0] < flaky_times[1] < flaky_times[2]


async def test_prune_deletes_old_attempts(settings: Settings, receiver: Receiver, subscriber: Subscriber) -> None:
    assert settings.database_url is not None
    url = settings.database_url
    await admin(url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url()))
    await receiver.post(doitong_body("job_" + uuid.uuid4().hex[:8], "completed"))
    async with publishing(settings):
        assert await eventually(lambda: _count(url, "delivery_attempts", 1))
    # Counted for the console by the trigger on the publisher's write-back.
    assert query(url, "SELECT sum(attempts), sum(delivered) FROM attempt_minutes") == [(1, 1)]

    async def prune(cutoff: datetime) -> outbox.Pruned:
        async def go(conn: object) -> outbox.Pruned:
            from receiver.core import db

            return await outbox.prune(await db.driver_connection(conn), cutoff)  # type: ignore[arg-type]

        return await admin(url, go)

    kept = await prune(datetime.now(UTC) - timedelta(days=1))
    assert kept.attempts == 0 and scalar(url, "SELECT count(*) FROM delivery_attempts") == 1
    assert kept.job_minutes == 0
    # Prune takes the per-minute rows once folded (it never waits on a writer's own rows).
    execute(url, "SELECT receiver_fold_minutes(%s)", (datetime.now(UTC) + timedelta(minutes=1),))
    pruned = await prune(datetime.now(UTC) + timedelta(seconds=1))
    assert pruned.attempts == 1 and pruned.deliveries == 1
    assert pruned.job_minutes >= 1 and scalar(url, "SELECT count(*) FROM job_minutes") == 0
    assert pruned.attempt_minutes == 1 and scalar(url, "SELECT count(*) FROM attempt_minutes") == 0
    assert scalar(url, "SELECT count(*) FROM delivery_attempts") == 0


async def _count(url: str, table: str, expected: int) -> bool:
    return bool(scalar(url, f"SELECT count(*) FROM {table}") == expected)
