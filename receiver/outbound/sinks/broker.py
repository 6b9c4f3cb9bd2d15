"""What the NATS and RabbitMQ sinks share: sends counted in flight so `close()` lets
them finish, one connect attempt at a time, and failing fast between attempts.

A subclass names its broker, keeps `display_url` (never the password), and writes
`_establish` (connect and declare, under `_lock`, gated by `_begin_attempt`) and
`_send` (one publish, every failure a Result).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod

from receiver.core.errors import ReceiverError
from receiver.outbound.sinks.base import Message, Result


class Unavailable(Exception):
    """No usable connection right now; the text is the Result error."""


class BrokerSink(ABC):
    broker: str  # as people name it: "NATS", "RabbitMQ"
    display_url: str

    def __init__(self, *, publish_timeout: float, retry_interval: float) -> None:
        self._publish_timeout = publish_timeout
        # The broker client's reconnect interval, and how long sends fail fast after a failed attempt.
        self._retry_interval = retry_interval
        self._lock = asyncio.Lock()
        # Bumped on every connect attempt so that callers queued behind a failed
        # attempt report its error instead of each trying again in turn.
        self._attempts = 0
        # After a failed attempt, sends fail fast until then instead of each paying for a new one.
        self._retry_at = 0.0
        self._last_error = f"not connected to {self.broker} yet"
        self._closed = False
        # Sends awaiting their ack or confirm; close() lets them finish first.
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def connect(self) -> None:
        """Connect and declare what the sink publishes to.

        Raises `ReceiverError` when the broker cannot be reached in time. The
        sink stays usable either way: `send` tries again on demand.
        """
        if self._closed:
            raise ReceiverError(f"{type(self).__name__} is closed")
        try:
            await self._establish(eager=True)
        except Unavailable as exc:
            raise ReceiverError(f"{self.broker} at {self.display_url}: {exc}") from None

    async def send(self, message: Message) -> Result:
        """Publish once and wait for the broker to take the message; failures are Results."""
        if self._closed:
            return Result(ok=False, error=f"{self.broker} sink is closed")
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._send(message)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _stop_sending(self) -> None:
        """First step of `close()`: refuse new sends, give those in flight the publish timeout."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._publish_timeout)

    def _begin_attempt(self, attempt: int, *, eager: bool) -> None:
        """Under `_lock`, once the sink is found not connected: start a new attempt, or raise
        Unavailable with the last error when another caller just tried (`attempt` is the
        count read before waiting for the lock) or the retry interval has not passed."""
        if self._attempts != attempt or (not eager and time.monotonic() < self._retry_at):
            raise Unavailable(self._last_error)
        self._attempts += 1
        self._retry_at = time.monotonic() + self._retry_interval

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(f"{self.broker} sink is closed")

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Whether the last word from the broker is that the sink can publish (for /readyz)."""

    @abstractmethod
    async def _establish(self, *, eager: bool = False) -> object: ...

    @abstractmethod
    async def _send(self, message: Message) -> Result: ...

    @abstractmethod
    async def close(self) -> None: ...


def describe(exc: BaseException | None) -> str:
    """An exception as a short line for logs and `deliveries.last_error`."""
    if exc is None:
        return "closed"
    text = str(exc).strip()
    name = type(exc).__name__
    return (f"{name}: {text}" if text and text != name else name)[:200]
