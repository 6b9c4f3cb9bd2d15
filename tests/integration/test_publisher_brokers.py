"""The publisher end to end into real brokers: NATS JetStream and RabbitMQ, outages included."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aio_pika
import nats
import nats.js.errors
import orjson
import pytest

from receiver.core.config import Settings
from tests.brokers import TcpProxy, require_broker
from tests.integration.test_brokers import AMQP_URL, NATS_URL
from tests.support import Receiver, doitong_body, eventually, publishing, query, running, scalar, settings_for


@pytest.fixture
def base_settings(database_url: str, tmp_path: Path) -> Settings:
    return settings_for(
        database_url,
        tmp_path,
        retry_schedule=(timedelta(milliseconds=300),) * 40,
        poll_interval=timedelta(milliseconds=100),
        deny_networks=(),
    )


@pytest.fixture
async def receiver(base_settings: Settings) -> AsyncIterator[Receiver]:
    async with running(base_settings) as server:
        yield server


@pytest.fixture
async def nats_stream() -> AsyncIterator[tuple[str, str]]:
    require_broker("NATS", NATS_URL, 4222, "RECEIVER_NATS_URL")
    suffix = uuid.uuid4().hex[:8]
    stream, prefix = f"RECEIVER_TEST_{suffix}", f"receivertest{suffix}"
    yield stream, prefix
    nc = await nats.connect(NATS_URL, allow_reconnect=False)
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jsm().delete_stream(stream)
    await nc.close()


async def test_events_land_in_the_jetstream_stream_with_their_msg_id(
    base_settings: Settings, receiver: Receiver, nats_stream: tuple[str, str]
) -> None:
    stream, prefix = nats_stream
    settings = base_settings.replace(nats_url=NATS_URL, nats_stream=stream, nats_subject_prefix=prefix)
    job = "job-" + uuid.uuid4().hex[:8]
    async with publishing(settings):
        assert await eventually(lambda: _has_subscription(settings, "nats"))
        first = (await receiver.post(doitong_body(job, "processing"))).json()
        second = (await receiver.post(doitong_body(job, "completed"))).json()
        assert await eventually(lambda: _delivered(settings, 2))
    nc = await nats.connect(NATS_URL)
    try:
        jsm = nc.jsm()
        assert (await jsm.stream_info(stream)).state.messages == 2
        messages = [await jsm.get_msg(stream, seq=n) for n in (1, 2)]
    finally:
        await nc.close()
    assert [m.subject for m in messages] == [f"{prefix}.job.processing", f"{prefix}.job.completed"]
    assert [m.headers["Nats-Msg-Id"] for m in messages if m.headers] == [first["event_id"], second["event_id"]]
    assert orjson.loads(messages[1].data)["data"]["status"] == "completed"


async def test_events_reach_a_bound_rabbitmq_queue_with_message_id(base_settings: Settings, receiver: Receiver) -> None:
    require_broker("RabbitMQ", AMQP_URL, 5672, "RECEIVER_AMQP_URL")
    exchange = "receiver-test-" + uuid.uuid4().hex[:8]
    settings = base_settings.replace(amqp_url=AMQP_URL, amqp_exchange=exchange)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        async with publishing(settings):
            assert await eventually(lambda: _has_subscription(settings, "amqp"))
            declared = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue("", exclusive=True)
            await queue.bind(declared, routing_key="job.#")
            accepted = (await receiver.post(doitong_body("job-" + uuid.uuid4().hex[:8], "completed"))).json()
            assert await eventually(lambda: _delivered(settings, 1))
        message = await queue.get(timeout=5)
        assert message.message_id == accepted["event_id"]
        assert message.routing_key == "job.completed"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert orjson.loads(message.body)["id"] == accepted["event_id"]
        await message.ack()
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


async def test_a_broker_outage_is_retried_and_delivered_when_it_returns(
    base_settings: Settings, receiver: Receiver, nats_stream: tuple[str, str]
) -> None:
    stream, prefix = nats_stream
    host, port = require_broker("NATS", NATS_URL, 4222, "RECEIVER_NATS_URL")
    async with TcpProxy(host, port) as proxy:
        settings = base_settings.replace(
            nats_url=f"nats://127.0.0.1:{proxy.port}", nats_stream=stream, nats_subject_prefix=prefix
        )
        async with publishing(settings):
            assert await eventually(lambda: _has_subscription(settings, "nats"))
            await proxy.stop()
            await receiver.post(doitong_body("job-" + uuid.uuid4().hex[:8], "completed"))
            assert await eventually(lambda: _failed_attempts(settings, 2), seconds=20)
            assert scalar(settings.database_url or "", "SELECT state FROM deliveries") == "pending"
            await proxy.resume()
            assert await eventually(lambda: _delivered(settings, 1), seconds=30)
    rows = query(settings.database_url or "", "SELECT attempts, last_error FROM deliveries")
    assert rows[0][0] >= 3  # failed at least twice, then delivered


async def _has_subscription(settings: Settings, kind: str) -> bool:
    return scalar(settings.database_url or "", "SELECT count(*) FROM subscriptions WHERE id = %s", (kind,)) == 1


async def _delivered(settings: Settings, count: int) -> bool:
    return scalar(settings.database_url or "", "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == count


async def _failed_attempts(settings: Settings, at_least: int) -> bool:
    attempts = scalar(settings.database_url or "", "SELECT max(attempts) FROM deliveries WHERE last_error IS NOT NULL")
    return attempts is not None and attempts >= at_least
