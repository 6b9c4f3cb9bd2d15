"""`receiver publish` as real processes: order across four of them, kill -9, SIGTERM, the CLI."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from receiver.outbound import subscriptions
from tests.subscriber import Subscriber
from tests.support import MASTER_KEY, admin, doitong_body, eventually, execute, query, running, scalar, settings_for

RECEIVER = [sys.executable, "-m", "receiver"]


def _env(database_url: str, home: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "RECEIVER_HOME": str(home),
            "RECEIVER_MASTER_KEY": base64.urlsafe_b64encode(MASTER_KEY).decode(),
            "RECEIVER_POLL_INTERVAL": "200ms",
            "RECEIVER_RETRY_SCHEDULE": "100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms",
            "RECEIVER_DENY_NETWORKS": "",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(values)
    return env


def _publisher(env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*RECEIVER, "publish", "--metrics-port", "0", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    server = await Subscriber().start()
    yield server
    await server.stop()


async def _ingest(database_url: str, home: Path, jobs: list[str], statuses: list[str]) -> None:
    async with running(settings_for(database_url, home)) as receiver:
        for status in statuses:
            answers = await asyncio.gather(*(receiver.post(doitong_body(job, status)) for job in jobs))
            assert all(a.status_code == 200 for a in answers)


async def test_per_job_order_holds_across_four_publisher_processes(
    database_url: str, tmp_path: Path, subscriber: Subscriber
) -> None:
    subscriber.jitter = 0.005
    subscriber.fail_rate = 0.15
    await admin(database_url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url()))
    jobs = [f"job-order-{i:03d}" for i in range(120)]
    statuses = ["queued", "processing", "rendering", "completed"]
    await _ingest(database_url, tmp_path, jobs, statuses)
    env = _env(database_url, tmp_path)
    publishers = [_publisher(env, "--concurrency", "16") for _ in range(4)]
    try:

        async def all_delivered() -> bool:
            return scalar(database_url, "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 480

        assert await eventually(all_delivered, seconds=90)
    finally:
        for process in publishers:
            process.send_signal(signal.SIGTERM)
        for process in publishers:
            process.communicate(timeout=30)
            assert process.returncode == 0
    order = {status: index for index, status in enumerate(statuses)}
    seen: dict[str, list[int]] = defaultdict(list)
    for request in subscriber.accepted():
        event = orjson.loads(request.body)
        seen[event["data"]["id"]].append(order[event["data"]["status"]])
    assert set(seen) == set(jobs)
    for job, sequence in seen.items():
        assert sequence == sorted(sequence), (job, sequence)
        assert sorted(set(sequence)) == [0, 1, 2, 3], (job, sequence)
    claimers = {row[0] for row in query(database_url, "SELECT DISTINCT claimed_by FROM deliveries")}
    assert claimers == {None}


async def test_kill_9_mid_batch_loses_nothing_and_the_lease_is_taken_over(
    database_url: str, tmp_path: Path, subscriber: Subscriber
) -> None:
    subscriber.delay = 1.5
    await admin(database_url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url()))
    jobs = [f"job-kill-{i:02d}" for i in range(40)]
    await _ingest(database_url, tmp_path, jobs, ["completed"])
    env = _env(database_url, tmp_path, RECEIVER_HTTP_TIMEOUT="3s", RECEIVER_LEASE_TIMEOUT="4s")
    first = _publisher(env, "--concurrency", "10")
    try:
        await subscriber.wait_for(5, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        claimed = scalar(database_url, "SELECT count(*) FROM deliveries WHERE claimed_by IS NOT NULL")
        assert claimed > 0  # the dead publisher left claims behind
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    second = _publisher(env, "--concurrency", "40")
    try:

        async def all_delivered() -> bool:
            return scalar(database_url, "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 40

        assert await eventually(all_delivered, seconds=60)
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    delivered = {orjson.loads(r.body)["data"]["id"] for r in subscriber.accepted()}
    assert delivered == set(jobs)  # every event arrived at least once
    taken_over = scalar(database_url, "SELECT count(*) FROM deliveries WHERE attempts >= 2")
    assert taken_over > 0  # claims of the killed process were retried by the second


async def test_sigterm_finishes_the_sends_in_flight(database_url: str, tmp_path: Path, subscriber: Subscriber) -> None:
    subscriber.delay = 2.0
    await admin(database_url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url()))
    await _ingest(database_url, tmp_path, [f"job-term-{i}" for i in range(5)], ["completed"])
    process = _publisher(_env(database_url, tmp_path), "--concurrency", "5")
    await subscriber.wait_for(5, timeout=30)
    process.send_signal(signal.SIGTERM)
    _out, err = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, err
    assert scalar(database_url, "SELECT count(*) FROM deliveries WHERE state = 'delivered'") == 5


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RECEIVER, *args], env=env, capture_output=True, text=True, timeout=60)


async def test_subscriber_and_delivery_commands(database_url: str, tmp_path: Path, subscriber: Subscriber) -> None:
    env = _env(database_url, tmp_path)
    added = await asyncio.to_thread(
        _cli, env, "subscribers", "add", subscriber.url(), "--events", "job.completed,job.failed", "--ed25519"
    )
    assert added.returncode == 0, added.stderr
    fields = dict(line.split(None, 1) for line in added.stdout.splitlines() if line.strip())
    sub_id, secret = fields["id"], fields["secret"]
    assert sub_id.startswith("sub_") and secret.startswith("whsec_")
    assert fields["public"].startswith("key  whpk_") or "whpk_" in added.stdout

    bad = await asyncio.to_thread(_cli, env, "subscribers", "add", "ftp://example.com/x")
    assert bad.returncode == 2 and "http" in bad.stderr
    bad_events = await asyncio.to_thread(_cli, env, "subscribers", "add", subscriber.url(), "--events", "completed")
    assert bad_events.returncode == 2 and "--events" in bad_events.stderr

    await _ingest(database_url, tmp_path, [f"job-cli-{uuid.uuid4().hex[:6]}"], ["completed"])
    process = _publisher(env)
    try:
        await subscriber.wait_for(1)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.communicate, timeout=30)

    listed = await asyncio.to_thread(_cli, env, "subscribers", "list")
    assert sub_id in listed.stdout and "enabled" in listed.stdout and secret not in listed.stdout
    deliveries = await asyncio.to_thread(_cli, env, "deliveries", "--state", "delivered")
    assert sub_id in deliveries.stdout and "job.completed" in deliveries.stdout

    assert (await asyncio.to_thread(_cli, env, "subscribers", "disable", sub_id)).returncode == 0
    assert "disabled" in (await asyncio.to_thread(_cli, env, "subscribers", "list")).stdout
    assert (await asyncio.to_thread(_cli, env, "subscribers", "enable", sub_id)).returncode == 0
    rotated = await asyncio.to_thread(_cli, env, "subscribers", "rotate-secret", sub_id, "--grace", "1h")
    assert rotated.returncode == 0 and "whsec_" in rotated.stdout and secret not in rotated.stdout

    replayed = await asyncio.to_thread(_cli, env, "replay", "--since", "1h", "--subscriber", sub_id)
    assert replayed.returncode == 0 and replayed.stdout.startswith("1 deliveries")
    bad_replay = await asyncio.to_thread(_cli, env, "replay", "--event", "not-a-uuid")
    assert bad_replay.returncode == 2

    execute(database_url, "UPDATE deliveries SET state = 'delivered', delivered_at = now() - interval '40 days'")
    execute(database_url, "UPDATE outbox_events SET created_at = now() - interval '40 days'")
    pruned = await asyncio.to_thread(_cli, env, "prune", "--older-than", "30d")
    assert pruned.returncode == 0, pruned.stderr
    assert scalar(database_url, "SELECT count(*) FROM deliveries") == 0
    assert scalar(database_url, "SELECT count(*) FROM outbox_events") == 0
    assert scalar(database_url, "SELECT count(*) FROM jobs") == 1
    assert scalar(database_url, "SELECT count(*) FROM job_events") == 1

    assert (await asyncio.to_thread(_cli, env, "subscribers", "remove", sub_id)).returncode == 0
    assert (await asyncio.to_thread(_cli, env, "subscribers", "remove", sub_id)).returncode == 1


async def test_publish_serves_healthz_and_metrics(database_url: str, tmp_path: Path, subscriber: Subscriber) -> None:
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await admin(database_url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url()))
    await _ingest(database_url, tmp_path, ["job-metrics-1"], ["completed"])
    process = subprocess.Popen(
        [*RECEIVER, "publish", "--metrics-port", str(port)],
        env=_env(database_url, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await subscriber.wait_for(1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def healthy() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            assert await eventually(healthy)

            async def counted() -> bool:
                text = (await client.get("/metrics")).text
                return 'receiver_delivery_attempts_total{kind="http",outcome="delivered"} 1.0' in text

            assert await eventually(counted)
            text = (await client.get("/metrics")).text
            assert "receiver_deliveries_pending 0.0" in text
            assert "receiver_delivery_latency_seconds_bucket" in text
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0


async def test_a_metrics_port_in_use_stops_start_up_with_one_line(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(database_url, tmp_path, RECEIVER_HOST="127.0.0.1")
        done = await asyncio.to_thread(
            subprocess.run,
            [*RECEIVER, "publish", "--metrics-port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    # Bad configuration: exit 2 and one line naming the setting, before the publisher starts.
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"receiver: config error: RECEIVER_METRICS_PORT (--metrics-port): cannot listen on 127.0.0.1:{port} "
        "(Address already in use)"
    ], done.stderr
