"""Operational events end to end, with real processes: subscribers added by the `receiver` command,
a real `receiver publish`, a real HTTP subscriber verifying the Standard Webhooks signature."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from standardwebhooks import Webhook

from receiver.outbound import subscriptions
from tests.subscriber import Subscriber
from tests.support import MASTER_KEY, admin, doitong_body, running, scalar, settings_for

RECEIVER = [sys.executable, "-m", "receiver"]


def _env(database_url: str, home: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "RECEIVER_HOME": str(home),
            "RECEIVER_MASTER_KEY": base64.urlsafe_b64encode(MASTER_KEY).decode(),
            "RECEIVER_POLL_INTERVAL": "200ms",
            "RECEIVER_DENY_NETWORKS": "",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(values)
    return env


def _add(env: dict[str, str], url: str, *extra: str) -> tuple[str, str]:
    """`receiver subscribers add`; (id, secret) from what it prints."""
    done = subprocess.run(
        [*RECEIVER, "subscribers", "add", url, *extra], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    printed = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
    return printed["id"], printed["secret"]


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    server = await Subscriber(script={"/broken": [500] * 20}).start()
    yield server
    await server.stop()


async def test_a_dead_delivery_is_announced_to_the_subscriber_that_asked_and_no_other(
    database_url: str, tmp_path: Path, subscriber: Subscriber
) -> None:
    env = _env(database_url, tmp_path, RECEIVER_RETRY_SCHEDULE="100ms,100ms")  # three attempts, then dead
    broken = (await admin(database_url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url("/broken")))).id
    plain = (await admin(database_url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url("/plain")))).id
    operations, secret = _add(env, subscriber.url("/ops"), "--events", "operational.*")  # as an operator would
    async with running(settings_for(database_url, tmp_path)) as receiver:
        accepted = await receiver.post(doitong_body("job-op"))
        assert accepted.status_code == 200
    job_event = accepted.json()["event_id"]
    publisher = subprocess.Popen(
        [*RECEIVER, "publish", "--metrics-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        announced = await subscriber.wait_for(1, path="/ops", timeout=60)
        assert announced, "no operational event reached the subscriber that asked for them"
        await asyncio.sleep(1.0)  # time for anything that should not come to come
    finally:
        publisher.send_signal(signal.SIGTERM)
        _, err = publisher.communicate(timeout=30)
    assert publisher.returncode == 0, err

    [request] = [r for r in subscriber.received if r.path == "/ops"]
    event = Webhook(secret).verify(request.body, request.headers)  # signed like any event
    assert event["type"] == "operational.delivery_dead"
    assert event["data"] == {
        "subscriber_id": broken,
        "kind": "http",
        "url": subscriber.url("/broken"),
        "event_id": job_event,
        "event_type": "job.completed",
        "job_id": "job-op",
        "attempts": 3,
        "last_status": 500,
        "last_error": "HTTP 500",
    }
    # The subscribers that did not ask got the job event only; the broken one, its three attempts.
    for path, count in (("/plain", 1), ("/broken", 3)):
        types = [orjson.loads(body)["type"] for body in subscriber.bodies(path)]
        assert types == ["job.completed"] * count, (path, types)
    assert scalar(database_url, "SELECT count(*) FROM deliveries WHERE subscription_id = %s", (plain,)) == 1
    assert scalar(database_url, "SELECT state FROM deliveries WHERE subscription_id = %s", (operations,)) == "delivered"


def test_an_unknown_operational_type_is_refused_in_one_line(database_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [*RECEIVER, "subscribers", "add", "http://127.0.0.1:9/hook", "--events", "job.completed,operational.dead"],
        env=_env(database_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "receiver: config error: --events: 'operational.dead' is not an operational event type; use operational.* "
        "or one of operational.subscriber_disabled, operational.circuit_opened, operational.circuit_closed, "
        "operational.delivery_dead, operational.endpoint_forged_signatures, operational.jobs_stale"
    ]
    assert scalar(database_url, "SELECT count(*) FROM subscriptions") == 0
