"""Subscriber health with real processes: two `receiver publish` processes share one rate limit,
one circuit breaker and one auto-disable clock through PostgreSQL, and a real HTTP subscriber
records when each attempt arrives."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiver.cli import main as cli_main
from receiver.cli import subscribers as cli_subscribers
from receiver.outbound import subscriptions
from tests.acceptance.test_publish_processes import _cli, _env, _ingest, _publisher
from tests.subscriber import Received, Subscriber
from tests.support import admin, eventually, free_port, query, scalar, settings_for


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    server = await Subscriber().start()
    yield server
    await server.stop()


@asynccontextmanager
async def _publishers(env: dict[str, str], count: int = 2) -> AsyncIterator[list[int]]:
    """`count` publisher processes, each with its own /metrics port (yielded); stopped with SIGTERM."""
    ports = [free_port() for _ in range(count)]
    processes = [_publisher(env, "--concurrency", "16", "--metrics-port", str(port)) for port in ports]
    try:
        yield ports
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            _out, err = await asyncio.to_thread(process.communicate, timeout=30)
            assert process.returncode == 0, err
            assert "Traceback" not in err, err


async def _metric(port: int, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _delivered(database_url: str) -> int:
    return int(scalar(database_url, "SELECT count(*) FROM deliveries WHERE state = 'delivered'"))


async def _until_delivered(database_url: str, count: int, seconds: float) -> None:
    # In a thread: the subscriber runs in this event loop, and a blocked loop would stamp the
    # requests that arrived meanwhile all at once.
    async def done() -> bool:
        return await asyncio.to_thread(_delivered, database_url) >= count

    assert await eventually(done, seconds=seconds), f"{_delivered(database_url)} of {count} delivered"


def _windows(times: list[float], width: float) -> Iterator[int]:
    """How many of `times` (sorted) fall in [t, t + width), for each t in them."""
    end = 0
    for start, moment in enumerate(times):
        while end < len(times) and times[end] < moment + width:
            end += 1
        yield end - start


async def _list(database_url: str, home: Path) -> str:
    """`receiver subscribers list`'s output, in this process (a new process can take seconds to
    start on a busy machine, longer than the state it is to show lasts)."""
    out = io.StringIO()
    settings = settings_for(database_url, home)
    with contextlib.redirect_stdout(out):
        await asyncio.to_thread(cli_subscribers.cmd_subscribers_list, settings, argparse.Namespace())
    return out.getvalue()


def _sent(received: list[Received]) -> list[float]:
    return sorted(r.at for r in received)


async def test_a_rate_limit_holds_across_two_publisher_processes(
    database_url: str, tmp_path: Path, subscriber: Subscriber
) -> None:
    env = _env(database_url, tmp_path)
    added = await asyncio.to_thread(_cli, env, "subscribers", "add", subscriber.url(), "--rate", "20/s")
    assert added.returncode == 0 and "rate        20/s" in added.stdout, added.stderr
    await _ingest(database_url, tmp_path, [f"job-rate-{i:03d}" for i in range(80)], ["completed"])
    async with _publishers(env) as ports:
        await _until_delivered(database_url, 80, seconds=30)
        sent = [await _metric(port, "receiver_delivery_attempts_total", outcome="delivered") for port in ports]
        waited = [await _metric(port, "receiver_subscriber_rate_limited_total") for port in ports]
    # When each attempt started, as the two publishers wrote it down (one clock: this machine's).
    starts = [
        float(row[0])
        for row in query(database_url, "SELECT extract(epoch FROM at)::float8 FROM delivery_attempts ORDER BY at")
    ]
    times = _sent(subscriber.received)
    assert len(starts) == len(times) == 80
    # At most 20 in any one-second window, sliding (and 5 in any quarter: paced, not in bursts),
    # give or take one for timers (a start half an interval late, next to one on time) ...
    assert max(_windows(starts, 1.0)) <= 21
    assert max(_windows(starts, 0.25)) <= 6
    # ... and one more at the subscriber, where a new connection can delay a first request.
    assert max(_windows(times, 1.0)) <= 22
    # Not much under the rate either: the limit paces, it does not throttle further.
    assert 79 / 20 - 0.1 <= starts[-1] - starts[0] <= 80 / 20 + 1.5
    # Both processes were there to take slots; which one takes them is the claim's race (one
    # publisher can win every slot of a short run), so only the total is certain. Two claims
    # sharing one row's slots is tested directly in tests/integration/test_subscriber_health.py.
    assert sum(sent) == 80, sent
    assert sum(waited) >= 60


async def test_the_breaker_pauses_probes_once_doubles_and_closes_across_two_publisher_processes(
    database_url: str, tmp_path: Path, subscriber: Subscriber
) -> None:
    env = _env(database_url, tmp_path, RECEIVER_BREAKER_FAILURES="3", RECEIVER_BREAKER_COOLOFF="1s")
    added = await asyncio.to_thread(_cli, env, "subscribers", "add", subscriber.url())
    sub_id = added.stdout.split()[1]
    await _ingest(database_url, tmp_path, [f"job-breaker-{i}" for i in range(6)], ["completed"])
    subscriber.default = 500
    probes: list[float] = []

    def second_probe_succeeds(request: Received) -> None:
        # A request 0.8 s or more after the one before is a probe (the cool-off is 1 s).
        if subscriber.received[:-1] and request.at - subscriber.received[-2].at >= 0.8:
            probes.append(request.at)
            if len(probes) == 2:
                subscriber.default = 200

    subscriber.on_request = second_probe_succeeds
    async with _publishers(env):

        async def opened() -> bool:
            query = "SELECT circuit_open_until IS NOT NULL FROM subscriptions"
            return bool(await asyncio.to_thread(scalar, database_url, query))

        assert await eventually(opened, seconds=20)
        listed = await _list(database_url, tmp_path)
        # Open, or (in the moment between the cool-off's end and the probe's claim) half open.
        assert "circuit open until " in listed or "circuit half open" in listed, listed
        await _until_delivered(database_url, 6, seconds=20)
    times = _sent(subscriber.received)
    gaps = [(later - earlier, i) for i, (earlier, later) in enumerate(itertools.pairwise(times))]
    pauses = [(gap, i) for gap, i in gaps if gap >= 0.8]
    assert len(pauses) == 2, (times, pauses)
    (first, i), (second, j) = pauses
    assert i >= 2  # at least RECEIVER_BREAKER_FAILURES failures before it opened
    assert j == i + 1  # one probe between the two pauses, across both processes
    assert first >= 0.95 and second >= 1.95  # the cool-off, then twice it
    assert [r.status for r in sorted(subscriber.received, key=lambda r: r.at)][: j + 1] == [500] * (j + 1)
    types = [
        row[0]
        for row in query(
            database_url, "SELECT type FROM outbox_events WHERE subject = %s ORDER BY seq", (f"subscriber:{sub_id}",)
        )
    ]
    assert types == ["operational.circuit_opened", "operational.circuit_closed"]


async def test_a_subscriber_failing_for_the_whole_window_is_disabled_until_enabled(
    database_url: str, tmp_path: Path, subscriber: Subscriber
) -> None:
    env = _env(
        database_url,
        tmp_path,
        RECEIVER_DISABLE_AFTER="2s",
        RECEIVER_BREAKER_COOLOFF="500ms",  # the breaker opens too: its probes keep failing
        RECEIVER_RETRY_SCHEDULE=",".join(["100ms"] * 60),
    )
    added = await asyncio.to_thread(_cli, env, "subscribers", "add", subscriber.url(), "--rate", "100/s")
    sub_id = added.stdout.split()[1]
    await _ingest(database_url, tmp_path, [f"job-disable-{i}" for i in range(3)], ["completed"])
    subscriber.default = 503
    async with _publishers(env):

        async def disabled() -> bool:
            query = "SELECT state FROM subscriptions WHERE id = %s"
            return await asyncio.to_thread(scalar, database_url, query, (sub_id,)) == "disabled"

        assert await eventually(disabled, seconds=20)
        first_failure = min(r.at for r in subscriber.received)
        disabled_at = max(r.at for r in subscriber.received)
        assert disabled_at - first_failure >= 2.0
        await asyncio.sleep(0.5)  # attempts in flight when it was disabled end
        settled = len(subscriber.received)
        assert scalar(database_url, "SELECT count(*) FROM deliveries WHERE state = 'pending'") == 3  # they wait
        listed = await _list(database_url, tmp_path)
        assert "disabled: no successful delivery since " in listed, listed
        assert "(RECEIVER_DISABLE_AFTER 2s)" in listed and "rate 100/s" in listed
        assert len(subscriber.received) == settled  # no attempts while disabled
        subscriber.default = 200
        await admin(database_url, lambda c: subscriptions.set_enabled(c, sub_id, True))
        await _until_delivered(database_url, 3, seconds=20)
    types = [
        row[0]
        for row in query(database_url, "SELECT type FROM outbox_events WHERE subject = %s", (f"subscriber:{sub_id}",))
    ]
    assert types == ["operational.circuit_opened", "operational.subscriber_disabled"]


def test_rates_are_checked_before_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before the master key and the database: nothing here is set up, and a bad rate is still named.
    for name, value in _env("postgresql://nobody@127.0.0.1:1/none", tmp_path).items():
        monkeypatch.setenv(name, value)
    assert cli_main.main(["subscribers", "add", "http://127.0.0.1:9/x", "--rate", "50/d"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "receiver: config error: --rate: '50/d' is not a rate; write e.g. 50/s, 300/m or 1000/h (none: no limit)"
    ]
    assert cli_main.main(["subscribers", "update", "sub_x", "--rate", "0/s"]) == 2
    assert "--rate: '0/s' allows nothing" in capsys.readouterr().err
