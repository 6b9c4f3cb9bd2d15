"""OpenTelemetry end to end, with the SDK's in-memory exporter: the span tree from a signed webhook
to each delivery attempt, the trace context the outbox keeps, `traceparent` on what subscribers
and brokers receive, replays, and nothing at all when tracing is off."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import aio_pika
import nats
import nats.js.errors
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.core import db, tracing
from receiver.core.config import Settings
from receiver.outbound import outbox, subscriptions
from tests.brokers import require_broker
from tests.integration.test_brokers import AMQP_URL, NATS_URL
from tests.subscriber import Subscriber
from tests.support import MASTER_KEY, admin, doitong_body, eventually, publishing, running, scalar, settings_for

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.shutdown()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return settings_for(
        database_url,
        tmp_path,
        tracing=True,
        retry_schedule=(timedelta(milliseconds=200),) * 3,
        poll_interval=timedelta(milliseconds=100),
        http_timeout=timedelta(seconds=5),
        lease_timeout=timedelta(seconds=10),
        deny_networks=(),
    )


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    server = await Subscriber().start()
    yield server
    await server.stop()


def _named(found: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in found if s.name == name]


def _hex(number: int, width: int) -> str:
    return format(number, f"0{width}x")


def _traceparent(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{_hex(context.trace_id, 32)}-{_hex(context.span_id, 16)}-{_hex(context.trace_flags, 2)}"


async def _delivered(settings: Settings, count: int) -> bool:
    return scalar(settings.database_url or "", "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == count


async def test_one_trace_from_the_callers_traceparent_to_each_delivery_attempt(
    settings: Settings, spans: InMemorySpanExporter, subscriber: Subscriber
) -> None:
    url = subscriber.url("/hook?token=secret")
    await admin(settings.database_url or "", lambda c: subscriptions.add(c, MASTER_KEY, url))
    subscriber.script["/hook"] = [500]  # the first attempt fails, the retry gets through
    job = "job_" + uuid.uuid4().hex[:10]
    async with running(settings) as receiver, publishing(settings):
        answer = await receiver.post(doitong_body(job), headers={"traceparent": CALLER, "tracestate": "vendor=x"})
        assert answer.status_code == 200
        got = await subscriber.wait_for(2)
    event_id = answer.json()["event_id"]
    found = spans.get_finished_spans()

    (server,) = _named(found, "POST /webhooks/doitong")
    assert server.kind == SpanKind.SERVER
    assert server.parent is not None and _hex(server.parent.span_id, 16) == CALLER_SPAN
    assert _hex(server.context.trace_id, 32) == CALLER_TRACE
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/webhooks/doitong"
    assert server.attributes["http.response.status_code"] == 200

    (ingest,) = _named(found, "receiver_ingest")
    assert ingest.parent is not None and ingest.parent.span_id == server.context.span_id
    assert ingest.attributes == {
        "db.system.name": "postgresql",
        "db.stored_procedure.name": "receiver_ingest",
        "doitong.webhook.endpoint": "default",
        "doitong.job.id": job,
        "doitong.job.status": "completed",
        "doitong.webhook.outcome": "accepted",
        "doitong.event.id": event_id,
    }
    stored = scalar(settings.database_url or "", "SELECT traceparent FROM outbox_events WHERE id = %s", (event_id,))
    assert stored == _traceparent(ingest)
    assert scalar(settings.database_url or "", "SELECT tracestate FROM outbox_events") == "vendor=x"

    attempts = sorted(_named(found, "POST"), key=lambda s: s.attributes["doitong.delivery.attempt"])  # type: ignore[index]
    assert [a.attributes["doitong.delivery.attempt"] for a in attempts] == [1, 2]  # type: ignore[index]
    for attempt, request in zip(attempts, got, strict=True):
        assert attempt.kind == SpanKind.CLIENT
        assert attempt.parent is not None and attempt.parent.span_id == ingest.context.span_id
        assert attempt.context.trace_id == server.context.trace_id
        # The subscriber can continue the trace from exactly this attempt.
        assert request.headers["traceparent"] == _traceparent(attempt)
        assert request.headers["tracestate"] == "vendor=x"
        assert attempt.attributes is not None
        assert attempt.attributes["url.full"] == subscriber.url("/hook") + "?REDACTED"
        assert attempt.attributes["doitong.event.id"] == event_id
    failed, delivered = attempts
    assert failed.attributes is not None and delivered.attributes is not None
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["doitong.delivery.outcome"] == "retry"
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "500"
    assert delivered.attributes["http.response.status_code"] == 200
    assert delivered.attributes["doitong.delivery.outcome"] == "delivered"
    assert delivered.status.status_code == StatusCode.UNSET


async def test_the_ingest_span_says_what_each_webhook_did(settings: Settings, spans: InMemorySpanExporter) -> None:
    job = "job_" + uuid.uuid4().hex[:10]
    async with running(settings) as receiver:
        await receiver.post(doitong_body(job, "completed"))
        await receiver.post(doitong_body(job, "completed"))  # the same delivery again
        await receiver.post(doitong_body(job, "processing"))  # late: the job is past it
        await receiver.post(doitong_body(job, "completed"), headers={"Idempotency-Key": "another"})
        await receiver.post(doitong_body(job, "failed"), headers={"Idempotency-Key": "completed"})  # conflict
    outcomes = [s.attributes["doitong.webhook.outcome"] for s in _named(spans.get_finished_spans(), "receiver_ingest")]  # type: ignore[index]
    assert outcomes == ["accepted", "duplicate", "out_of_order", "unchanged", "out_of_order"]
    # No caller context: each webhook is a trace of its own.
    servers = _named(spans.get_finished_spans(), "POST /webhooks/doitong")
    assert len({s.context.trace_id for s in servers}) == 5 and all(s.parent is None for s in servers)


async def test_a_replayed_delivery_starts_a_new_trace_linked_to_the_original(
    settings: Settings, spans: InMemorySpanExporter, subscriber: Subscriber
) -> None:
    await admin(settings.database_url or "", lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url()))
    async with running(settings) as receiver, publishing(settings):
        event_id = (await receiver.post(doitong_body("job_" + uuid.uuid4().hex[:10]))).json()["event_id"]
        await subscriber.wait_for(1)
        assert await eventually(lambda: _delivered(settings, 1))

        async def replay(conn: AsyncConnection) -> int:
            return await outbox.replay(await db.driver_connection(conn), event_id=uuid.UUID(event_id))

        assert await admin(settings.database_url or "", replay) == 1
        got = await subscriber.wait_for(2)
    (ingest,) = _named(spans.get_finished_spans(), "receiver_ingest")
    original, replayed = sorted(_named(spans.get_finished_spans(), "POST"), key=lambda s: s.start_time or 0)
    assert original.context.trace_id == ingest.context.trace_id
    assert replayed.parent is None and replayed.context.trace_id != ingest.context.trace_id
    assert [link.context.span_id for link in replayed.links] == [ingest.context.span_id]
    assert replayed.attributes is not None and "doitong.delivery.replayed_at" in replayed.attributes
    assert got[1].headers["traceparent"] == _traceparent(replayed)


async def test_off_nothing_is_traced_stored_or_sent(
    settings: Settings, spans: InMemorySpanExporter, subscriber: Subscriber
) -> None:
    settings = settings.replace(tracing=False)  # a tracer provider is there: the flag alone decides
    await admin(settings.database_url or "", lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url()))
    async with running(settings) as receiver, publishing(settings):
        await receiver.post(doitong_body("job_" + uuid.uuid4().hex[:10]), headers={"traceparent": CALLER})
        (got,) = await subscriber.wait_for(1)
    assert spans.get_finished_spans() == ()
    assert scalar(settings.database_url or "", "SELECT count(*) FROM outbox_events WHERE traceparent IS NULL") == 1
    assert "traceparent" not in {name.lower() for name in got.headers}


@pytest.fixture
async def nats_stream() -> AsyncIterator[tuple[str, str]]:
    require_broker("NATS", NATS_URL, 4222, "RECEIVER_NATS_URL")
    suffix = uuid.uuid4().hex[:8]
    stream, prefix = f"RECEIVER_TRACE_{suffix}", f"receivertrace{suffix}"
    yield stream, prefix
    nc = await nats.connect(NATS_URL, allow_reconnect=False)
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jsm().delete_stream(stream)
    await nc.close()


async def test_nats_and_rabbitmq_messages_carry_the_attempts_traceparent(
    settings: Settings, spans: InMemorySpanExporter, nats_stream: tuple[str, str]
) -> None:
    require_broker("RabbitMQ", AMQP_URL, 5672, "RECEIVER_AMQP_URL")
    stream, prefix = nats_stream
    exchange = "receiver-trace-" + uuid.uuid4().hex[:8]
    settings = settings.replace(
        nats_url=NATS_URL, nats_stream=stream, nats_subject_prefix=prefix, amqp_url=AMQP_URL, amqp_exchange=exchange
    )
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        declared = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind(declared, routing_key="job.#")
        async with running(settings) as receiver, publishing(settings):
            assert await eventually(lambda: _subscribed(settings, 2))
            await receiver.post(doitong_body("job_" + uuid.uuid4().hex[:10]))
            assert await eventually(lambda: _delivered(settings, 2))
        message = await queue.get(timeout=5)
        await message.ack()
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()
    nc = await nats.connect(NATS_URL)
    try:
        stored = await nc.jsm().get_msg(stream, seq=1)
    finally:
        await nc.close()

    found = spans.get_finished_spans()
    (ingest,) = _named(found, "receiver_ingest")
    (to_nats,) = _named(found, f"send {prefix}.job.completed")
    (to_rabbitmq,) = _named(found, f"send {exchange}")
    for span in (to_nats, to_rabbitmq):
        assert span.kind == SpanKind.PRODUCER
        assert span.parent is not None and span.parent.span_id == ingest.context.span_id
    assert to_nats.attributes is not None and to_rabbitmq.attributes is not None
    assert to_nats.attributes["messaging.system"] == "nats"
    assert to_rabbitmq.attributes["messaging.system"] == "rabbitmq"
    assert to_rabbitmq.attributes["messaging.rabbitmq.destination.routing_key"] == "job.completed"
    assert stored.headers is not None and stored.headers["traceparent"] == _traceparent(to_nats)
    assert message.headers["traceparent"] == _traceparent(to_rabbitmq)


async def _subscribed(settings: Settings, count: int) -> bool:
    kinds = "SELECT count(*) FROM subscriptions WHERE kind IN ('nats', 'amqp')"
    return scalar(settings.database_url or "", kinds) == count
