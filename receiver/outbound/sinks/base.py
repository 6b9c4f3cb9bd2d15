"""The contract between the publisher and a sink."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    event_id: str
    event_type: str
    job_id: str
    body: bytes  # the envelope {"id","type","timestamp","data"} as JSON, identical on every attempt
    # Headers for the consumer beyond the sink's own: the attempt's `traceparent`/`tracestate`
    # when tracing is on (HTTP request headers, NATS headers, AMQP message headers).
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """What one attempt came to.

    ok:           delivered (HTTP 2xx, JetStream ack, RabbitMQ confirm).
    status:       HTTP status when there was one.
    error:        short reason for a failure, fit for `deliveries.last_error` and logs.
    retry_after:  seconds the receiver asked us to wait (429/503 Retry-After).
    gone:         the subscriber said it never wants more (HTTP 410): dead + disable.
    """

    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    gone: bool = False


class Sink(Protocol):
    async def send(self, message: Message) -> Result:
        """Deliver once. Never raises for delivery failures: they are Results."""
        ...

    async def close(self) -> None: ...


class Unconfigured:
    """The sink of a subscription to a broker this publisher has no URL for. Such deliveries
    are not claimed here (the claim names the brokers this publisher has), so this only
    answers a subscription whose kind changed between a claim and its send."""

    def __init__(self, kind: str) -> None:
        self._error = f"{kind} is not configured in this publisher"

    async def send(self, message: Message) -> Result:
        return Result(ok=False, error=self._error)

    async def close(self) -> None:
        """Holds nothing."""
