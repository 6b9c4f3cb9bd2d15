"""The span of each delivery attempt, when tracing is on (receiver.core.tracing).

An attempt is a child of the span that created its event (the webhook's ingest span, or a
reconciliation poll's), whose context `outbox_events` keeps: a child and not a link, so that
the provider's callback, our transaction, every attempt and the subscriber's own spans (it
gets `traceparent` for the attempt) form one tree in any OTLP backend; links are drawn, or
not, as each backend pleases. The cost is a trace that stays open as long as the retries go
on (up to the retry schedule's two days); a tail-sampling collector decides on it before
late attempts arrive.

A replayed delivery is an operator's new decision, not the webhook's consequence: each of its
attempts is the root of a new trace, linked to the event's.

An HTTP subscriber's attempt is a CLIENT span named like the HTTP conventions' (`POST`); a
broker's is a PRODUCER span `send <destination>` with the messaging conventions' attributes.
Ours are namespaced `doitong.*`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue
from yarl import URL

from receiver.core import tracing
from receiver.outbound.outbox import Claimed
from receiver.outbound.sinks.base import Result
from receiver.outbound.subscriptions import Subscription

if TYPE_CHECKING:
    from receiver.outbound.sinks.broker import BrokerSink


def attempt(
    item: Claimed, subscription: Subscription | None, brokers: dict[str, BrokerSink]
) -> AbstractContextManager[Span]:
    """The span of one attempt to deliver `item`, current inside the `with` block."""
    attributes: dict[str, AttributeValue] = {
        "doitong.subscription.id": item.subscription_id,
        "doitong.delivery.id": item.delivery_id,
        "doitong.delivery.attempt": item.attempt,
        "doitong.event.id": str(item.event_id),
        "doitong.event.type": item.event_type,
        "doitong.job.id": item.job_id,
    }
    kind = subscription.kind if subscription is not None else "http"
    if kind == "http":
        name, span_kind = "POST", SpanKind.CLIENT
        attributes["http.request.method"] = "POST"
        if subscription is not None:
            attributes.update(_url_attributes(subscription.url))
    else:
        sink = brokers.get(kind)
        destination = _destination(kind, sink, item.event_type)
        name, span_kind = f"send {destination}", SpanKind.PRODUCER
        attributes["messaging.system"] = "rabbitmq" if kind == "amqp" else kind
        attributes["messaging.destination.name"] = destination
        attributes["messaging.operation.type"] = "send"
        attributes["messaging.operation.name"] = "publish"
        attributes["messaging.message.id"] = str(item.event_id)
        if kind == "amqp":
            attributes["messaging.rabbitmq.destination.routing_key"] = item.event_type
    if item.replayed_at is not None:
        attributes["doitong.delivery.replayed_at"] = item.replayed_at.isoformat()
        link = tracing.link_to(item.traceparent, item.tracestate)
        return tracing.span(
            name, kind=span_kind, attributes=attributes, parent=Context(), links=[link] if link is not None else []
        )
    parent = tracing.context_of(item.traceparent, item.tracestate) or Context()
    return tracing.span(name, kind=span_kind, attributes=attributes, parent=parent)


def ended(span: Span, result: Result, outcome: str) -> None:
    """What the attempt came to: the HTTP status, the outcome (delivered, retry, dead, gone),
    and for a failure, status ERROR with the reason."""
    if result.status is not None:
        span.set_attribute("http.response.status_code", result.status)
    span.set_attribute("doitong.delivery.outcome", outcome)
    if not result.ok:
        tracing.failed(span, result.error or "failed", str(result.status) if result.status is not None else "_OTHER")


def _destination(kind: str, sink: BrokerSink | None, event_type: str) -> str:
    """The subject (NATS) or exchange (RabbitMQ) a broker's message goes to."""
    subject_for = getattr(sink, "subject_for", None)
    if callable(subject_for):
        return str(subject_for(event_type))
    exchange = getattr(sink, "exchange", None)
    return str(exchange) if exchange is not None else kind


def _url_attributes(url: str) -> dict[str, AttributeValue]:
    """url.full without a query string (where a subscriber may keep a token), and where it goes."""
    try:
        parsed = URL(url)
    except ValueError:
        return {}
    shown = parsed.with_query(None).with_fragment(None)
    attributes: dict[str, AttributeValue] = {"url.full": str(shown) + ("?REDACTED" if parsed.query_string else "")}
    if parsed.host:
        attributes["server.address"] = parsed.host
    if parsed.port is not None:
        attributes["server.port"] = parsed.port
    return attributes
