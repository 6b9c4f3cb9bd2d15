"""The demo's subscriber verifies with the Standard Webhooks library and keeps its counters:
a good signature is processed once, a repeat is acknowledged, anything else is a 401."""

from __future__ import annotations

import base64
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import httpx
import orjson
import standardwebhooks

from receiver.cli import demo

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef01234567").decode()
BODY = orjson.dumps({"type": "job.completed", "data": {"id": "job-1"}})


def _headers(event_id: str, secret: str = SECRET, *, timestamp: int | None = None) -> dict[str, str]:
    moment = datetime.fromtimestamp(timestamp if timestamp is not None else int(time.time()), UTC)
    signature = standardwebhooks.Webhook(secret).sign(event_id, moment, BODY.decode())
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }


async def test_verifies_counts_and_refuses() -> None:
    other = "whsec_" + base64.b64encode(b"another key, 24 bytes...").decode()
    async with AsyncExitStack() as stack, httpx.AsyncClient() as client:
        served = await demo._start_subscriber(stack)
        subscriber = served.handler
        assert (await client.post(served.url, content=BODY, headers=_headers("evt-0"))).status_code == 401  # no key yet
        subscriber.webhook = standardwebhooks.Webhook(SECRET)

        async def post(headers: dict[str, str]) -> int:
            return (await client.post(served.url, content=BODY, headers=headers)).status_code

        assert await post(_headers("evt-1")) == 200
        assert await post(_headers("evt-1")) == 200  # a repeat: acknowledged, not processed again
        rotated = _headers("evt-2")
        rotated["webhook-signature"] = (
            _headers("evt-2", other)["webhook-signature"] + " " + rotated["webhook-signature"]
        )
        assert await post(rotated) == 200  # several signatures: one that matches is enough
        assert await post(_headers("evt-3", other)) == 401  # forged
        assert await post({**_headers("evt-4"), "webhook-id": "evt-5"}) == 401  # signed for another id
        assert await post(_headers("evt-6", timestamp=int(time.time()) - 3600)) == 401  # replayed an hour later
        assert await post({k: v for k, v in _headers("evt-7").items() if k != "webhook-id"}) == 401
        assert await post({**_headers("evt-8"), "webhook-signature": "v1"}) == 401  # malformed: no comma
        assert await post({**_headers("evt-9"), "webhook-signature": "v1,not base64!"}) == 401

    assert sorted(subscriber.processed) == ["evt-1", "evt-2"]
    assert subscriber.processed["evt-1"] == orjson.loads(BODY)
    assert subscriber.redelivered == 1
    assert subscriber.bad_signatures == 7
