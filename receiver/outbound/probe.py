"""A test event for one HTTP subscriber, sent now and outside the outbox (the console's
"send a test event"): the operator sees at once what the subscriber answered.

It is signed like every delivery (Standard Webhooks, current and previous secret, Ed25519 when
the subscription has a key pair), goes through the same HTTP client and deny list, and has the
type `receiver.test`, which no job event has, so a subscriber can tell it apart and ignore it.
Nothing is stored: there is no job, no outbox event and no delivery row behind it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.core.config import Settings
from receiver.core.errors import ConfigError, NotFound
from receiver.outbound import subscriptions
from receiver.outbound.sinks.base import Message, Result
from receiver.outbound.sinks.http import HttpPool

TEST_TYPE = "receiver.test"


@dataclass(frozen=True, slots=True)
class Probe:
    event_id: str
    result: Result
    duration_ms: int


async def send(conn: AsyncConnection, settings: Settings, master_key: bytes, subscription_id: str) -> Probe:
    """Send a test event to the HTTP subscriber `subscription_id` and say how it went."""
    loaded = await subscriptions.load(conn, master_key)
    subscription = loaded.get(subscription_id)
    if subscription is None:
        raise NotFound(f"subscription {subscription_id!r} does not exist")
    if subscription.kind != "http":
        raise ConfigError(f"{subscription_id} is the {subscription.kind} broker; test events go to HTTP subscribers")
    event_id = str(uuid.uuid4())
    body = orjson.dumps(
        {
            "id": event_id,
            "type": TEST_TYPE,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": {"subscription_id": subscription_id, "message": "a test event sent from the receiver's console"},
        }
    )
    pool = HttpPool(timeout=settings.http_timeout.total_seconds(), deny_networks=settings.deny_networks, limit=1)
    started = time.monotonic()
    try:
        result = await pool.sink(subscription).send(Message(event_id, TEST_TYPE, "", body))
    finally:
        await pool.close()
    return Probe(event_id, result, round((time.monotonic() - started) * 1000))
