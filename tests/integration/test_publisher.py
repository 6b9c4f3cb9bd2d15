"""The outbox publisher against real PostgreSQL and a real HTTP subscriber."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from pathlib import Path

import orjson
import pytest
import standardwebhooks
from prometheus_client import REGISTRY

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

FAST = (timedelta(milliseconds=200), timedelta(milliseconds=200))


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    server = await Subscriber().start()
    yield server
    await server.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return settings_for(
        database_url,
        tmp_path,
        retry_schedule=FAST,
        poll_interval=timedelta(milliseconds=100),
        http_timeout=timedelta(seconds=5),
        lease_timeout=timedelta(seconds=10),
        deny_networks=(),
    )


@pytest.fixture
async def receiver(settings: Settings) -> AsyncIterator[Receiver]:
    async with running(settings) as server:
        yield server


async def _subscribe(settings: Settings, url: str, **options: object) -> subscriptions.Added:
    assert settings.database_url is not None
    return await admin(settings.database_url, lambda c: subscriptions.add(c, MASTER_KEY, url, **options))  # type: ignore[arg-type]


def _job() -> str:
    return "job_" + uuid.uuid4().hex[:10]


async def test_delivery_is_verified_by_the_standardwebhooks_library(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    added = await _subscribe(settings, subscriber.url(), ed25519=True)
    assert added.public_key is not None and added.public_key.startswith("whpk_")
    job = _job()
    accepted = (await receiver.post(doitong_body(job, "completed"))).json()
    async with publishing(settings):
        got = await subscriber.wait_for(1)
    assert len(got) == 1
    request = got[0]
    payload = standardwebhooks.Webhook(added.secret).verify(request.body, request.headers)
    assert payload["id"] == accepted["event_id"] == request.headers["webhook-id"]
    assert payload["type"] == "job.completed"
    assert payload["data"]["id"] == job and payload["data"]["status"] == "completed"
    signatures = request.headers["webhook-signature"].split(" ")
    assert [s.split(",")[0] for s in signatures] == ["v1", "v1a"]
    # A tampered body does not verify.
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(added.secret).verify(request.body.replace(b"completed", b"failed"), request.headers)
    assert settings.database_url is not None
    assert scalar(settings.database_url, "SELECT state FROM deliveries") == "delivered"


async def test_ed25519_signature_verifies_with_the_printed_public_key(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    added = await _subscribe(settings, subscriber.url(), ed25519=True)
    await receiver.post(doitong_body(_job(), "completed"))
    async with publishing(settings):
        request = (await subscriber.wait_for(1))[0]
    assert added.public_key is not None
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(added.public_key.removeprefix("whpk_")))
    v1a = next(s for s in request.headers["webhook-signature"].split(" ") if s.startswith("v1a,"))
    content = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    public.verify(base64.b64decode(v1a.removeprefix("v1a,")), content)  # raises when wrong


async def test_filters_by_event_type_and_service(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    await _subscribe(settings, subscriber.url("/done"), event_types=["job.completed"])
    await _subscribe(settings, subscriber.url("/other"), services=["other-service"])
    await _subscribe(settings, subscriber.url("/all"))
    job = _job()
    await receiver.post(doitong_body(job, "processing"))
    await receiver.post(doitong_body(job, "completed"))
    await receiver.post(doitong_body(_job(), "failed", service="other-service"))
    async with publishing(settings):
        await subscriber.wait_for(3, "/all")
        await asyncio.sleep(0.3)
    types = {path: [orjson.loads(b)["type"] for b in subscriber.bodies(path)] for path in ("/done", "/other", "/all")}
    assert types["/done"] == ["job.completed"]
    assert types["/other"] == ["job.failed"]
    assert sorted(types["/all"]) == ["job.completed", "job.failed", "job.processing"]


async def test_failing_subscriber_gets_it_on_the_third_attempt_while_a_healthy_one_is_not_delayed(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    subscriber.script["/flaky"] = [500, 500, 200]
    await _subscribe(settings, subscriber.url("/flaky"))
    await _subscribe(settings, subscriber.url("/healthy"))
    await receiver.post(doitong_body(_job(), "completed"))
    async with publishing(settings):
        healthy = await subscriber.wait_for(1, "/healthy")
        flaky = await subscriber.wait_for(3, "/flaky")
        await asyncio.sleep(0.5)
    assert len(healthy) == 1
    assert len(subscriber.bodies("/flaky")) == 3  # exactly: the third attempt succeeded
    assert healthy[0].at <= flaky[0].at + 0.1  # the healthy one did not wait for the retries
    assert flaky[2].at - flaky[0].at >= 0.3  # two waits of ~200 ms each (±20 % jitter)
    assert len({r.headers["webhook-id"] for r in flaky}) == 1  # the same event id every time
    assert settings.database_url is not None
    rows = query(settings.database_url, "SELECT attempts, state FROM deliveries ORDER BY attempts")
    assert rows == [(1, "delivered"), (3, "delivered")]


async def test_gone_disables_the_subscription_until_enabled(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    subscriber.script["/gone"] = [410]
    added = await _subscribe(settings, subscriber.url("/gone"))
    first, second = _job(), _job()
    await receiver.post(doitong_body(first, "completed"))
    assert settings.database_url is not None
    url = settings.database_url
    async with publishing(settings):
        await subscriber.wait_for(1, "/gone")
        await receiver.post(doitong_body(second, "completed"))
        assert await eventually(
            lambda: _value(url, "SELECT state FROM subscriptions WHERE id = %s", added.id, "disabled")
        )
        await asyncio.sleep(0.5)
        assert len(subscriber.received) == 1  # the second event waits
        listed = await admin(url, subscriptions.list_all)
        reason = listed[0].disabled_reason or ""
        assert "410" in reason
        # Announced like an auto-disable, in the transaction that disabled it.
        announced = query(
            url,
            "SELECT subject, payload::text FROM outbox_events WHERE type = 'operational.subscriber_disabled'",
        )
        assert [(subject, orjson.loads(payload)["data"]) for subject, payload in announced] == [
            (f"subscriber:{added.id}", {"subscriber_id": added.id, "url": subscriber.url("/gone"), "reason": reason})
        ]
        await admin(url, lambda c: subscriptions.set_enabled(c, added.id, True))
        got = await subscriber.wait_for(2, "/gone")
    assert orjson.loads(got[1].body)["data"]["id"] == second
    states = query(url, "SELECT d.state FROM deliveries d ORDER BY d.id")
    assert states == [("dead",), ("delivered",)]


async def _value(url: str, statement: str, param: object, expected: object) -> bool:
    return scalar(url, statement, (param,)) == expected


async def test_dead_after_the_schedule_then_replayed(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    subscriber.default = 500
    await _subscribe(settings, subscriber.url())
    await receiver.post(doitong_body(_job(), "completed"))
    assert settings.database_url is not None
    url = settings.database_url
    async with publishing(settings):
        assert await eventually(lambda: _value(url, "SELECT count(*) FROM deliveries WHERE state = %s", "dead", 1))
        assert len(subscriber.received) == len(FAST) + 1  # N waits: N + 1 attempts
        subscriber.default = 200

        async def replay_dead(conn):  # type: ignore[no-untyped-def]
            from receiver.core import db

            return await outbox.replay(await db.driver_connection(conn), dead=True)

        assert await admin(url, replay_dead) == 1
        await subscriber.wait_for(len(FAST) + 2)
    assert scalar(url, "SELECT state FROM deliveries") == "delivered"
    assert len({r.headers["webhook-id"] for r in subscriber.received}) == 1


async def test_a_subscription_gets_events_after_it_was_added_and_replay_since_reaches_older(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    old_job = _job()
    await receiver.post(doitong_body(old_job, "completed"))
    await asyncio.sleep(0.05)
    added = await _subscribe(settings, subscriber.url())
    new_job = _job()
    await receiver.post(doitong_body(new_job, "completed"))
    assert settings.database_url is not None
    url = settings.database_url
    async with publishing(settings):
        await subscriber.wait_for(1)
        await asyncio.sleep(0.3)
        assert [orjson.loads(b)["data"]["id"] for b in subscriber.bodies()] == [new_job]

        async def replay_since(conn):  # type: ignore[no-untyped-def]
            from datetime import datetime

            from receiver.core import db

            since = datetime.now(UTC) - timedelta(hours=1)
            return await outbox.replay(await db.driver_connection(conn), since=since, subscription_id=added.id)

        assert await admin(url, replay_since) == 2
        await subscriber.wait_for(3)
    ids = sorted(orjson.loads(b)["data"]["id"] for b in subscriber.bodies())
    assert ids == sorted([new_job, new_job, old_job])


async def test_redirects_are_failures_and_retry_after_is_honoured(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    subscriber.script["/moved"] = [(302, {"Location": "/elsewhere"})]
    subscriber.script["/busy"] = [(429, {"Retry-After": "7"})]
    await _subscribe(settings, subscriber.url("/moved"))
    await _subscribe(settings, subscriber.url("/busy"))
    await receiver.post(doitong_body(_job(), "completed"))
    assert settings.database_url is not None
    url = settings.database_url
    # The schedule says ~2 s; the subscriber asks for 7 s: the longer wait wins.
    async with publishing(settings.replace(retry_schedule=(timedelta(seconds=2),))):
        await subscriber.wait_for(1, "/moved")
        await subscriber.wait_for(1, "/busy")
        await asyncio.sleep(0.5)
    assert subscriber.bodies("/elsewhere") == []
    rows = query(
        url,
        "SELECT s.url, d.last_status, d.last_error, extract(epoch FROM d.next_attempt_at - d.last_attempt_at)"
        " FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id ORDER BY s.url",
    )
    busy, moved = rows
    assert busy[1] == 429 and 6.5 <= float(busy[3]) <= 7.5
    assert moved[1] == 302 and "redirect" in moved[2]


async def test_denied_networks_are_refused_at_delivery_time(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    import ipaddress

    await _subscribe(settings, subscriber.url())
    await _subscribe(settings, f"http://localhost:{subscriber.port}/by-name")
    await receiver.post(doitong_body(_job(), "completed"))
    denying = settings.replace(deny_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")))
    assert settings.database_url is not None
    url = settings.database_url
    async with publishing(denying):
        assert await eventually(
            lambda: _value(url, "SELECT count(*) FROM deliveries WHERE last_error IS NOT NULL AND %s", True, 2)
        )
    assert subscriber.received == []
    errors = [row[0] for row in query(url, "SELECT last_error FROM deliveries")]
    assert all("denied" in e.lower() or "deny" in e.lower() for e in errors), errors


async def test_receiver_run_mode_publishes_from_the_same_process(
    settings: Settings, subscriber: Subscriber, tmp_path: Path
) -> None:
    from receiver.app import create_app

    await _subscribe(settings, subscriber.url())
    import httpx

    from receiver.core import embedded_uvicorn
    from receiver.inbound import signatures
    from tests.support import SECRET

    async with embedded_uvicorn.serving(create_app(settings, with_publisher=True), port=0) as url:
        body = doitong_body(_job(), "completed")
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{url}/webhooks/doitong",
                content=body,
                headers={signatures.HEADER: signatures.sign(SECRET, body)},
            )
        got = await subscriber.wait_for(1)
        assert got and got[0].headers["webhook-id"] == answer.json()["event_id"]


# lease 10 s, timeout 5 s: no time for a claim to wait, claims only for free slots;
# lease 30 s: claims a batch ahead (the default configuration).
CLAIM_MODES = pytest.mark.parametrize("lease", [10, 30], ids=["claims-for-free-slots", "claims-ahead"])


@CLAIM_MODES
async def test_a_slow_subscriber_does_not_delay_the_others(settings: Settings, receiver: Receiver, lease: int) -> None:
    settings = settings.replace(lease_timeout=timedelta(seconds=lease))
    slow = await Subscriber(delay=2.0).start()
    fast = await Subscriber().start()
    try:
        await _subscribe(settings, slow.url())
        await _subscribe(settings, fast.url())
        jobs = [_job() for _ in range(30)]
        for job in jobs:
            await receiver.post(doitong_body(job, "completed"))
        limited = settings.replace(subscriber_concurrency=4)
        async with publishing(limited, concurrency=8) as publisher:
            started = asyncio.get_running_loop().time()
            got = await fast.wait_for(30, timeout=10)
            elapsed = asyncio.get_running_loop().time() - started
            assert len(got) == 30
            # 30 deliveries behind a subscriber that takes 2 s each, with 8 slots: had the slow
            # one been allowed every slot, the fast one would wait ~8 s.
            assert elapsed < 1.5, elapsed
            assert len(slow.received) <= 4 + 4  # never more than its share at once (two rounds at most)
            assert publisher.concurrency == 8
    finally:
        await slow.stop()
        await fast.stop()


@CLAIM_MODES
async def test_a_deep_backlog_of_one_subscriber_does_not_take_every_slot(
    settings: Settings, receiver: Receiver, lease: int
) -> None:
    settings = settings.replace(lease_timeout=timedelta(seconds=lease))
    slow = await Subscriber(delay=3.0).start()
    fast = await Subscriber().start()
    try:
        await _subscribe(settings, slow.url())
        for _ in range(30):  # older than anything the fast subscriber will get: first in line
            await receiver.post(doitong_body(_job(), "completed"))
        await _subscribe(settings, fast.url())
        for _ in range(10):
            await receiver.post(doitong_body(_job(), "completed"))
        async with publishing(settings.replace(subscriber_concurrency=4), concurrency=8):
            started = asyncio.get_running_loop().time()
            got = await fast.wait_for(10, timeout=10)
            elapsed = asyncio.get_running_loop().time() - started
            in_flight_at_slow = len(slow.received)
        assert len(got) == 10
        assert elapsed < 1.5, elapsed  # one claim must not have given the slow subscriber all 8 slots
        assert in_flight_at_slow <= 4
    finally:
        await slow.stop()
        await fast.stop()


def _released(reason: str) -> float:
    return REGISTRY.get_sample_value("receiver_delivery_claims_released_total", {"reason": reason}) or 0.0


async def test_claims_run_one_batch_ahead_and_go_back_unattempted_on_stop(
    settings: Settings, receiver: Receiver
) -> None:
    slow = await Subscriber(delay=1.0).start()
    try:
        await _subscribe(settings, slow.url())
        for _ in range(10):
            await receiver.post(doitong_body(_job(), "completed"))
        assert settings.database_url is not None
        url = settings.database_url
        ahead = settings.replace(lease_timeout=timedelta(seconds=30), subscriber_concurrency=2)
        released = _released("stopping")
        async with publishing(ahead, concurrency=2):
            assert await eventually(lambda: _true(len(slow.received) == 2))
            # Two sending, two more claimed and waiting for a slot.
            assert await eventually(
                lambda: _true(scalar(url, "SELECT count(*) FROM deliveries WHERE claimed_by IS NOT NULL") == 4)
            )
        # Stopped: the two sends finished and were recorded; the two waiting went back as they were.
        assert len(slow.received) == 2
        assert _released("stopping") - released == 2
        states = query(
            url,
            "SELECT state, attempts, claimed_by IS NULL, last_attempt_at IS NULL FROM deliveries"
            " ORDER BY state, attempts",
        )
        # Nothing says the eight were ever attempted: no count, no time of a last attempt.
        assert states == [("delivered", 1, True, False)] * 2 + [("pending", 0, True, True)] * 8
    finally:
        await slow.stop()


async def test_a_claim_that_waited_too_long_for_a_slot_is_given_back_and_sent_later(
    settings: Settings, receiver: Receiver
) -> None:
    # lease 3.4 s - margin 0.34 s (a tenth) - timeout 2 s: a claim may wait ~1 s for a slot. Each
    # send takes 1.5 s with one slot, so the claim taken ahead goes stale and must be released.
    slow = await Subscriber(delay=1.5).start()
    try:
        await _subscribe(settings, slow.url())
        jobs = [_job() for _ in range(3)]
        for job in jobs:
            await receiver.post(doitong_body(job, "completed"))
        tight = settings.replace(
            lease_timeout=timedelta(seconds=3.4), http_timeout=timedelta(seconds=2), subscriber_concurrency=1
        )
        released = _released("stale")
        async with publishing(tight, concurrency=1):
            got = await slow.wait_for(3, timeout=15)
            assert settings.database_url is not None
            url = settings.database_url
            assert await eventually(
                lambda: _true(scalar(url, "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 3)
            )
        assert len(got) == 3
        assert sorted(orjson.loads(r.body)["data"]["id"] for r in got) == sorted(jobs)
        assert _released("stale") - released >= 1
        # Released claims were never attempted: every delivery took exactly one attempt.
        assert query(url, "SELECT attempts FROM deliveries") == [(1,), (1,), (1,)]
    finally:
        await slow.stop()


async def _true(value: bool) -> bool:
    return value


async def test_events_committed_without_a_notify_are_fanned_out_while_the_publisher_is_busy(
    settings: Settings, receiver: Receiver
) -> None:
    # NOTIFYs can be lost (the server drops them when its pool is busy); a busy publisher, whose
    # loop never times out, must still fan out on its poll interval.
    busy = await Subscriber(delay=0.05).start()
    watcher = await Subscriber().start()
    try:
        await _subscribe(settings, busy.url())
        for _ in range(100):
            await receiver.post(doitong_body(_job(), "completed"))
        await _subscribe(settings, watcher.url())
        assert settings.database_url is not None
        url = settings.database_url
        async with publishing(settings.replace(subscriber_concurrency=2), concurrency=4):
            assert await eventually(lambda: _true(len(busy.received) >= 5))
            job = _job()
            execute(  # the state change a webhook would make, with no NOTIFY at all
                url,
                "SELECT receiver_apply_job_event(%s, 'completed', 'test', NULL, NULL, NULL, 'hedra',"
                " NULL, NULL, NULL, NULL, NULL, NULL)",
                (job,),
            )
            got = await watcher.wait_for(1, timeout=1.5)
            still_busy = len(busy.received) < 100
        assert [orjson.loads(r.body)["data"]["id"] for r in got] == [job]
        assert still_busy  # it arrived while the backlog was still being sent
    finally:
        await busy.stop()
        await watcher.stop()


async def test_claims_waiting_for_a_subscriber_that_answers_410_go_back_unsent(
    settings: Settings, receiver: Receiver
) -> None:
    gone = await Subscriber(default=410, delay=0.5).start()
    try:
        added = await _subscribe(settings, gone.url())
        for _ in range(8):
            await receiver.post(doitong_body(_job(), "completed"))
        assert settings.database_url is not None
        url = settings.database_url
        ahead = settings.replace(lease_timeout=timedelta(seconds=30), subscriber_concurrency=2)
        async with publishing(ahead, concurrency=2):
            assert await eventually(
                lambda: _true(scalar(url, "SELECT state FROM subscriptions WHERE id = %s", (added.id,)) == "disabled")
            )
            await asyncio.sleep(0.5)
        # The two sends in flight got their 410; the two claims waiting behind them were not sent.
        assert len(gone.received) == 2
        assert query(url, "SELECT state, attempts, count(*) FROM deliveries GROUP BY 1, 2 ORDER BY 1") == [
            ("dead", 1, 2),
            ("pending", 0, 6),
        ]
    finally:
        await gone.stop()


async def test_a_jobs_next_event_goes_out_as_soon_as_the_one_before_is_delivered(
    settings: Settings, receiver: Receiver, subscriber: Subscriber
) -> None:
    # Outcomes are written back in the claim's statement, whose snapshot still shows the line's
    # head pending: the next event must not wait for the poll interval (5 s here) to go out.
    await _subscribe(settings, subscriber.url())
    job = _job()
    for status in ("processing", "completed"):
        await receiver.post(doitong_body(job, status))
    async with publishing(settings.replace(poll_interval=timedelta(seconds=5))):
        started = asyncio.get_running_loop().time()
        got = await subscriber.wait_for(2, timeout=4)
        elapsed = asyncio.get_running_loop().time() - started
    assert [orjson.loads(r.body)["type"] for r in got] == ["job.processing", "job.completed"]
    assert elapsed < 2.0, elapsed
