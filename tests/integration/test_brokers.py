"""The NATS JetStream and RabbitMQ sinks against real brokers.

Brokers: RECEIVER_NATS_URL (default nats://127.0.0.1:4222) and
RECEIVER_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/). A missing
broker skips its tests, except under CI=true, where it fails them.

Every test uses its own stream / exchange / queue names (and, but for the one
test that checks the default `doitong.>` subjects, its own subject prefix) and
removes them afterwards, so tests do not see each other's messages. Outages are
simulated with a TCP proxy in front of the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import nats
import nats.js.errors
import pytest
from aio_pika.abc import AbstractConnection, AbstractQueue
from nats.aio.client import Client
from nats.js.api import StreamConfig

from receiver.core.errors import ConfigError, ReceiverError
from receiver.outbound.sinks.amqp import AmqpSink
from receiver.outbound.sinks.base import Message, Result
from receiver.outbound.sinks.nats import NatsSink
from tests.brokers import TcpProxy, require_broker

NATS_URL = os.environ.get("RECEIVER_NATS_URL") or "nats://127.0.0.1:4222"
AMQP_URL = os.environ.get("RECEIVER_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672/"

OUTAGE_FAILURE_BOUND = 10.0  # seconds a send may take to report a broker that went away
RECOVERY_BOUND = 20.0  # seconds within which deliveries must resume once the broker is back


def make_message(event_type: str = "job.completed", event_id: str | None = None) -> Message:
    event_id = event_id or f"evt_{uuid.uuid4().hex}"
    job_id = f"job_{uuid.uuid4().hex[:8]}"
    body = (
        f'{{"id":"{event_id}","type":"{event_type}","timestamp":"2024-01-01T00:01:00Z",'
        f'"data":{{"id":"{job_id}","status":"completed"}}}}'
    ).encode()
    return Message(event_id=event_id, event_type=event_type, job_id=job_id, body=body)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def send_until_ok(send: Callable[[], Awaitable[Result]], within: float) -> Result:
    """Retry like the publisher would, until a send succeeds or `within` seconds pass."""
    deadline = time.monotonic() + within
    result = Result(ok=False, error="never tried")
    while time.monotonic() < deadline:
        result = await send()
        if result.ok:
            return result
        await asyncio.sleep(0.2)
    return result


async def send_expecting_failure(send: Callable[[], Awaitable[Result]]) -> Result:
    started = time.monotonic()
    result = await asyncio.wait_for(send(), OUTAGE_FAILURE_BOUND + 5)
    elapsed = time.monotonic() - started
    assert not result.ok, "a send through a stopped proxy reported success"
    assert result.error
    assert elapsed < OUTAGE_FAILURE_BOUND, f"reporting the outage took {elapsed:.1f}s"
    return result


async def assert_nothing_left_running(before: set[asyncio.Task[object]], within: float = 2.0) -> None:
    """No task started since `before` (by a sink or a proxy) outlives them.

    Tasks the libraries cancelled on close need a few loop turns to finish, hence the wait.
    """
    deadline = time.monotonic() + within
    while stray := asyncio.all_tasks() - before:
        assert time.monotonic() < deadline, stray
        await asyncio.sleep(0.02)


# --- NATS ---------------------------------------------------------------------------------------


@pytest.fixture
def nats_address() -> tuple[str, int]:
    return require_broker("NATS", NATS_URL, 4222, "RECEIVER_NATS_URL")


@pytest.fixture
async def nats_admin(nats_address: tuple[str, int]) -> AsyncIterator[Client]:
    nc = await nats.connect(NATS_URL, allow_reconnect=False, connect_timeout=2)
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def stream_name(nats_admin: Client) -> AsyncIterator[str]:
    name = unique("TEST_DOITONG_")
    yield name
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nats_admin.jsm().delete_stream(name)


def test_nats_defaults_are_the_documented_stream_and_subjects() -> None:
    sink = NatsSink(NATS_URL)
    assert sink.stream == "DOITONG"
    assert sink.subjects == "doitong.>"
    assert sink.subject_for("job.completed") == "doitong.job.completed"


async def test_nats_publishes_once_with_msg_id_and_dedupes(nats_admin: Client, stream_name: str) -> None:
    # A prefix of its own: a real DOITONG stream on this server owns doitong.> already.
    prefix = stream_name.lower()
    sink = NatsSink(NATS_URL, stream=stream_name, subject_prefix=prefix)
    try:
        await sink.connect()
        jsm = nats_admin.jsm()
        info = await jsm.stream_info(stream_name)
        assert info.config.subjects == [f"{prefix}.>"]

        message = make_message()
        assert await sink.send(message) == Result(ok=True)

        stored = await jsm.get_msg(stream_name, seq=1)
        assert stored.subject == f"{prefix}.job.completed"
        assert stored.data == message.body
        assert stored.headers is not None
        assert stored.headers["Nats-Msg-Id"] == message.event_id

        # Same event id again: JetStream answers with a duplicate ack, which is a delivery.
        assert await sink.send(message) == Result(ok=True)
        assert (await jsm.stream_info(stream_name)).state.messages == 1
    finally:
        await sink.close()


async def test_nats_leaves_an_existing_stream_alone(nats_admin: Client, stream_name: str) -> None:
    prefix = unique("doitongtest")
    jsm = nats_admin.jsm()
    await jsm.add_stream(StreamConfig(name=stream_name, subjects=[f"{prefix}.>"], max_msgs=1000))
    sink = NatsSink(NATS_URL, stream=stream_name, subject_prefix=prefix)
    try:
        await sink.connect()
        assert (await sink.send(make_message())).ok
        info = await jsm.stream_info(stream_name)
        assert info.config.max_msgs == 1000
        assert info.state.messages == 1
    finally:
        await sink.close()


async def test_nats_reports_an_outage_and_recovers(
    nats_address: tuple[str, int], nats_admin: Client, stream_name: str
) -> None:
    prefix = unique("doitongtest")
    async with TcpProxy(*nats_address) as proxy:
        sink = NatsSink(
            f"nats://127.0.0.1:{proxy.port}",
            stream=stream_name,
            subject_prefix=prefix,
            connect_timeout=1.0,
            publish_timeout=2.0,
            reconnect_wait=1.0,
        )
        try:
            assert (await sink.send(make_message())).ok

            await proxy.stop()
            await send_expecting_failure(lambda: sink.send(make_message()))

            await proxy.resume()
            last = make_message(event_type="job.failed")
            result = await send_until_ok(lambda: sink.send(last), RECOVERY_BOUND)
            assert result.ok, f"no delivery within {RECOVERY_BOUND}s of the broker returning: {result.error}"
        finally:
            await sink.close()

    stored = await nats_admin.jsm().get_last_msg(stream_name, f"{prefix}.job.failed")
    assert stored.data == last.body


async def test_nats_connects_lazily_when_the_broker_was_down_at_start(
    nats_address: tuple[str, int], nats_admin: Client, stream_name: str
) -> None:
    async with TcpProxy(*nats_address) as proxy:
        await proxy.stop()
        sink = NatsSink(
            f"nats://127.0.0.1:{proxy.port}",
            stream=stream_name,
            subject_prefix=unique("doitongtest"),
            connect_timeout=1.0,
            publish_timeout=2.0,
        )
        try:
            with pytest.raises(ReceiverError, match="cannot connect"):
                await sink.connect()
            await send_expecting_failure(lambda: sink.send(make_message()))

            await proxy.resume()
            result = await send_until_ok(lambda: sink.send(make_message()), RECOVERY_BOUND)
            assert result.ok, result.error
        finally:
            await sink.close()
    assert (await nats_admin.jsm().stream_info(stream_name)).state.messages == 1


async def test_nats_close_during_an_outage_stops_reconnecting(nats_address: tuple[str, int], stream_name: str) -> None:
    before = asyncio.all_tasks()  # the fixtures' admin connection has tasks of its own
    async with TcpProxy(*nats_address) as proxy:
        sink = NatsSink(f"nats://127.0.0.1:{proxy.port}", stream=stream_name, subject_prefix=unique("doitongtest"))
        await sink.connect()
        await proxy.stop()
        await send_expecting_failure(lambda: sink.send(make_message()))
        await sink.close()
    await assert_nothing_left_running(before)


async def test_nats_handles_500_concurrent_sends(nats_admin: Client, stream_name: str) -> None:
    sink = NatsSink(NATS_URL, stream=stream_name, subject_prefix=unique("doitongtest"))
    try:
        await sink.connect()
        results = await asyncio.gather(*(sink.send(make_message()) for _ in range(500)))
        failures = [result.error for result in results if not result.ok]
        assert not failures, failures[:5]
    finally:
        await sink.close()
    assert (await nats_admin.jsm().stream_info(stream_name)).state.messages == 500


async def test_nats_recreates_a_stream_deleted_under_it(nats_admin: Client, stream_name: str) -> None:
    sink = NatsSink(NATS_URL, stream=stream_name, subject_prefix=unique("doitongtest"))
    try:
        await sink.connect()
        await nats_admin.jsm().delete_stream(stream_name)
        lost = await sink.send(make_message())
        assert not lost.ok
        assert lost.error is not None and "no JetStream stream answers" in lost.error
        assert (await sink.send(make_message())).ok
    finally:
        await sink.close()
    assert (await nats_admin.jsm().stream_info(stream_name)).state.messages == 1


async def test_nats_explains_a_stream_that_cannot_be_created(nats_admin: Client, stream_name: str) -> None:
    prefix = unique("doitongtest")
    await nats_admin.jsm().add_stream(StreamConfig(name=stream_name, subjects=[f"{prefix}.>"]))
    other = unique("TEST_DOITONG_")
    sink = NatsSink(NATS_URL, stream=other, subject_prefix=prefix)
    try:
        with pytest.raises(ReceiverError, match=f"cannot create stream {other}: .*overlap"):
            await sink.connect()
    finally:
        await sink.close()


async def test_nats_close_waits_for_sends_in_flight(nats_admin: Client, stream_name: str) -> None:
    sink = NatsSink(NATS_URL, stream=stream_name, subject_prefix=unique("doitongtest"))
    await sink.connect()
    sends = [asyncio.ensure_future(sink.send(make_message())) for _ in range(50)]
    await asyncio.sleep(0)  # let them all start
    await sink.close()
    assert all(send.result().ok for send in sends)
    assert (await nats_admin.jsm().stream_info(stream_name)).state.messages == 50


async def test_nats_send_after_close_is_a_failure_not_an_exception(stream_name: str) -> None:
    sink = NatsSink(NATS_URL, stream=stream_name, subject_prefix=unique("doitongtest"))
    await sink.connect()
    await sink.close()
    result = await sink.send(make_message())
    assert not result.ok
    assert result.error == "NATS sink is closed"


# --- RabbitMQ -----------------------------------------------------------------------------------


@pytest.fixture
def amqp_address() -> tuple[str, int]:
    return require_broker("RabbitMQ", AMQP_URL, 5672, "RECEIVER_AMQP_URL")


@pytest.fixture
async def amqp_admin(amqp_address: tuple[str, int]) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(AMQP_URL, timeout=5)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def exchange_name(amqp_admin: AbstractConnection) -> AsyncIterator[str]:
    name = unique("doitong-test-")
    yield name
    channel = await amqp_admin.channel()
    try:
        await channel.exchange_delete(name)
    finally:
        await channel.close()


@contextlib.asynccontextmanager
async def bound_queue(
    connection: AbstractConnection, exchange: str, routing_key: str = "job.#"
) -> AsyncIterator[AbstractQueue]:
    """A queue of the test's own, bound to `exchange`, deleted afterwards."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(unique("doitong-test-q-"), auto_delete=False, durable=False)
        try:
            await queue.bind(exchange, routing_key=routing_key)
            yield queue
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await channel.close()


def via_proxy(url: str, port: int) -> str:
    """`url` (credentials and virtual host kept) pointed at a local proxy port."""
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    user_info, at, _host = authority.rpartition("@")
    return f"{scheme}://{user_info}{at}127.0.0.1:{port}{slash}{path}"


async def get_one(queue: AbstractQueue, within: float = 5.0) -> aio_pika.abc.AbstractIncomingMessage:
    deadline = time.monotonic() + within
    while True:
        incoming = await queue.get(fail=False, no_ack=True)
        if incoming is not None:
            return incoming
        assert time.monotonic() < deadline, "the message never reached the queue"
        await asyncio.sleep(0.05)


async def test_amqp_publishes_persistent_message_and_reports_unroutable(
    amqp_admin: AbstractConnection, exchange_name: str
) -> None:
    sink = AmqpSink(AMQP_URL, exchange=exchange_name)
    try:
        await sink.connect()

        nowhere = await sink.send(make_message())
        assert nowhere == Result(ok=False, error="unroutable: no queue bound for job.completed")

        async with bound_queue(amqp_admin, exchange_name, "job.#") as queue:
            message = make_message()
            assert await sink.send(message) == Result(ok=True)
            incoming = await get_one(queue)
            assert incoming.body == message.body
            assert incoming.message_id == message.event_id
            assert incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert incoming.routing_key == "job.completed"
            assert incoming.content_type == "application/json"

            unmatched = await sink.send(make_message(event_type="invoice.paid"))
            assert not unmatched.ok
            assert unmatched.error == "unroutable: no queue bound for invoice.paid"
    finally:
        await sink.close()


async def test_amqp_reports_an_outage_and_recovers(
    amqp_address: tuple[str, int], amqp_admin: AbstractConnection, exchange_name: str
) -> None:
    async with TcpProxy(*amqp_address) as proxy:
        user_info = AMQP_URL.partition("://")[2].rpartition("@")[0]
        via_proxy = f"amqp://{user_info + '@' if user_info else ''}127.0.0.1:{proxy.port}/"
        sink = AmqpSink(
            via_proxy, exchange=exchange_name, connect_timeout=2.0, publish_timeout=2.0, reconnect_interval=0.5
        )
        try:
            await sink.connect()
            async with bound_queue(amqp_admin, exchange_name) as queue:
                assert (await sink.send(make_message())).ok

                await proxy.stop()
                await send_expecting_failure(lambda: sink.send(make_message()))

                await proxy.resume()
                last = make_message(event_type="job.failed")
                result = await send_until_ok(lambda: sink.send(last), RECOVERY_BOUND)
                assert result.ok, f"no delivery within {RECOVERY_BOUND}s of the broker returning: {result.error}"

                ids = set()
                while (incoming := await queue.get(fail=False, no_ack=True)) is not None:
                    ids.add(incoming.message_id)
                assert last.event_id in ids
        finally:
            await sink.close()


async def test_amqp_connects_lazily_when_the_broker_was_down_at_start(
    amqp_address: tuple[str, int], amqp_admin: AbstractConnection, exchange_name: str
) -> None:
    # The exchange exists already (as the sink would declare it), so a queue can be bound up front.
    channel = await amqp_admin.channel()
    await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.close()
    async with TcpProxy(*amqp_address) as proxy, bound_queue(amqp_admin, exchange_name) as queue:
        await proxy.stop()
        sink = AmqpSink(
            via_proxy(AMQP_URL, proxy.port),
            exchange=exchange_name,
            connect_timeout=1.0,
            publish_timeout=2.0,
            reconnect_interval=0.5,
        )
        try:
            with pytest.raises(ReceiverError, match="cannot connect"):
                await sink.connect()
            await send_expecting_failure(lambda: sink.send(make_message()))

            await proxy.resume()
            last = make_message()
            result = await send_until_ok(lambda: sink.send(last), RECOVERY_BOUND)
            assert result.ok, result.error
            assert (await get_one(queue)).message_id == last.event_id
        finally:
            await sink.close()


async def test_amqp_close_during_an_outage_stops_reconnecting(
    amqp_address: tuple[str, int], exchange_name: str
) -> None:
    before = asyncio.all_tasks()  # the fixtures' admin connection has tasks of its own
    async with TcpProxy(*amqp_address) as proxy:
        sink = AmqpSink(via_proxy(AMQP_URL, proxy.port), exchange=exchange_name, reconnect_interval=0.5)
        await sink.connect()
        await proxy.stop()
        await send_expecting_failure(lambda: sink.send(make_message()))
        await asyncio.sleep(1)  # let a reconnect attempt or two fail first
        await sink.close()
    await assert_nothing_left_running(before)


# --- without a broker -----------------------------------------------------------------------------


def test_display_urls_hide_passwords() -> None:
    nats_sink = NatsSink("nats://alice:s3cret@nats.example:4222")
    assert nats_sink.display_url == "nats://alice@nats.example:4222"
    token_sink = NatsSink("nats://t0ken@nats.example:4222,nats://other.example:4222")
    assert token_sink.display_url == "nats://***@nats.example:4222,nats://other.example:4222"
    amqp_sink = AmqpSink("amqp://bob:hunter2@rabbit.example:5672/vhost")
    assert amqp_sink.display_url == "amqp://bob@rabbit.example:5672/vhost"


@pytest.mark.parametrize("url", ["http://nats.example:4222", "nats://", "", "nats://host:notaport"])
def test_nats_rejects_bad_urls_without_echoing_secrets(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        NatsSink(url.replace("://", "://u:s3cret@", 1) if "://" in url else url)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("url", ["http://rabbit.example/", "amqp://", "amqp://host:notaport/"])
def test_amqp_rejects_bad_urls_without_echoing_secrets(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AmqpSink(url.replace("://", "://u:s3cret@", 1))
    assert "s3cret" not in str(caught.value)


async def test_send_rejects_event_types_that_are_not_subjects() -> None:
    sink = NatsSink("nats://127.0.0.1:1")
    result = await sink.send(make_message(event_type="job.*"))
    assert not result.ok
    assert result.error is not None and "not a valid NATS subject" in result.error
    await sink.close()
