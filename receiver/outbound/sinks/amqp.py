"""RabbitMQ sink: one outbox event becomes one persistent message on the `doitong` topic exchange.

Messages are published with `mandatory=True` on a channel with publisher
confirms, so "delivered" means the broker routed the message to at least one
queue and took responsibility for it. A message no queue is bound for comes
back from the broker and is reported as a failure, not silently dropped.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractRobustChannel, AbstractRobustExchange
from aio_pika.exceptions import DeliveryError, PublishError
from pamqp.commands import Basic
from yarl import URL

from receiver.core.errors import ConfigError
from receiver.outbound.sinks.base import Message, Result
from receiver.outbound.sinks.broker import BrokerSink, Unavailable, describe

log = logging.getLogger("receiver.outbound.sinks.amqp")

_SCHEMES = ("amqp", "amqps")


class AmqpSink(BrokerSink):
    """Publishes outbox events to a durable RabbitMQ topic exchange and waits for the confirm.

    `url` is an `amqp://user:password@host:5672/vhost` URL; only `display_url`
    is ever logged. `connect()` is optional: `send` connects on demand, and the
    robust connection reconnects (and re-declares the exchange) on its own
    after a drop, so deliveries resume when the broker returns.
    """

    broker = "RabbitMQ"

    def __init__(
        self,
        url: str,
        exchange: str = "doitong",
        *,
        connect_timeout: float = 5.0,
        publish_timeout: float = 5.0,
        reconnect_interval: float = 2.0,
    ) -> None:
        self._url = _parse_url(url)
        self.display_url = _redact(self._url)
        if not exchange or exchange.startswith("amq."):
            raise ConfigError(f"AMQP exchange name {exchange!r} is not valid; use a plain name such as doitong")
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("publish_timeout", publish_timeout),
            ("reconnect_interval", reconnect_interval),
        ):
            if value <= 0:
                raise ConfigError(f"AMQP {name} must be positive, not {value}")
        self.exchange = exchange
        self._connect_timeout = connect_timeout
        self._connection: aio_pika.RobustConnection | None = None
        self._exchange: AbstractRobustExchange | None = None
        super().__init__(publish_timeout=publish_timeout, retry_interval=reconnect_interval)
        self._up = False  # only for logging a drop once, not on every failed reconnect

    @property
    def connected(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def _send(self, message: Message) -> Result:
        routing_key = message.event_type
        outgoing = aio_pika.Message(
            message.body,
            message_id=message.event_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type=message.event_type,
            headers=dict(message.headers) if message.headers else None,
        )
        try:
            exchange = await self._ready()
            async with asyncio.timeout(self._publish_timeout):
                confirmation = await exchange.publish(outgoing, routing_key, mandatory=True)
        except Unavailable as exc:
            return Result(ok=False, error=str(exc))
        except PublishError:
            return Result(ok=False, error=f"unroutable: no queue bound for {routing_key}")
        except DeliveryError as exc:
            return Result(ok=False, error=f"not confirmed by RabbitMQ: {_frame_name(exc.frame)}")
        except TimeoutError:
            return Result(ok=False, error=f"no RabbitMQ confirm within {self._publish_timeout:g}s")
        except aiormq.exceptions.ChannelInvalidStateError:
            return Result(ok=False, error="RabbitMQ channel is closed (reopening)")
        except aiormq.exceptions.ChannelClosed as exc:
            return Result(ok=False, error=f"RabbitMQ closed the channel: {describe(exc)}")
        except Exception as exc:  # a sink reports failures, it never raises them
            return Result(ok=False, error=describe(exc))
        if not isinstance(confirmation, Basic.Ack):
            # Only reachable if the channel stops raising on returns; never count it as delivered.
            return Result(ok=False, error=f"unexpected RabbitMQ confirmation: {type(confirmation).__name__}")
        return Result(ok=True)

    async def close(self) -> None:
        """Let sends in flight get their confirms, then close; the sink cannot be used afterwards."""
        await self._stop_sending()
        async with self._lock:
            connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            await _close_quietly(connection)

    async def _ready(self) -> AbstractRobustExchange:
        connection, exchange = self._connection, self._exchange
        if connection is not None and exchange is not None and not connection.is_closed:
            if not connection.connected.is_set():
                # The robust connection is already reconnecting in the background; waiting
                # for it here would only hold the publisher's slots until the timeout.
                raise Unavailable("not connected to RabbitMQ (reconnecting)")
            return exchange
        return await self._establish()

    async def _establish(self, *, eager: bool = False) -> AbstractRobustExchange:
        """Connect and declare, one attempt at a time, bounded by the connect timeout."""
        attempt = self._attempts
        async with self._lock:
            self._check_open()
            if self._connection is not None and self._exchange is not None and not self._connection.is_closed:
                return self._exchange
            self._begin_attempt(attempt, eager=eager)
            connection = aio_pika.RobustConnection(
                self._url,
                reconnect_interval=self._retry_interval,
                client_properties={"connection_name": "doitong-receiver"},
            )
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await connection.connect(timeout=self._connect_timeout)
                    channel: AbstractRobustChannel = connection.channel(publisher_confirms=True, on_return_raises=True)
                    await channel.initialize(timeout=self._connect_timeout)
                    exchange = await channel.declare_exchange(
                        self.exchange, aio_pika.ExchangeType.TOPIC, durable=True, timeout=self._connect_timeout
                    )
            except BaseException as exc:
                await _close_quietly(connection)
                if isinstance(exc, TimeoutError):
                    self._last_error = f"cannot connect to RabbitMQ within {self._connect_timeout:g}s"
                elif isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
                    self._last_error = f"exchange {self.exchange} exists with other settings: {describe(exc)}"
                elif isinstance(exc, Exception):
                    self._last_error = f"cannot connect to RabbitMQ: {describe(exc)}"
                else:
                    raise
                raise Unavailable(self._last_error) from None
            connection.reconnect_callbacks.add(self._on_reconnected)
            connection.close_callbacks.add(self._on_connection_closed)
            self._connection, self._exchange = connection, exchange
            self._up = True
            self._retry_at = 0.0
            log.info("connected to RabbitMQ at %s (exchange %s)", self.display_url, self.exchange)
            return exchange

    def _on_reconnected(self, _connection: object) -> None:
        self._up = True
        log.info("reconnected to RabbitMQ at %s", self.display_url)

    def _on_connection_closed(self, _connection: object, exc: BaseException | None) -> None:
        # Called again for every failed reconnect attempt; only the drop itself is worth a warning.
        if self._up and not self._closed:
            self._up = False
            log.warning("disconnected from RabbitMQ at %s: %s; reconnecting", self.display_url, describe(exc))


def _parse_url(url: str) -> URL:
    try:
        parsed = URL(url.strip())
        parsed.port  # noqa: B018 -- parsing the port is the validation
    except ValueError:
        raise ConfigError("AMQP URL is malformed; use amqp://user:password@host:5672/vhost") from None
    if parsed.scheme not in _SCHEMES or not parsed.host:
        raise ConfigError(
            f"AMQP URL {_redact(parsed)!r} is not supported; use amqp://user:password@host:5672/vhost (or amqps://)"
        )
    return parsed


def _redact(url: URL) -> str:
    return str(url.with_password(None)) if url.password is not None else str(url)


def _frame_name(frame: object) -> str:
    return type(frame).__name__


async def _close_quietly(connection: aio_pika.RobustConnection) -> None:
    try:
        await connection.close()
    except Exception as exc:
        log.debug("closing a RabbitMQ connection: %s", describe(exc))
