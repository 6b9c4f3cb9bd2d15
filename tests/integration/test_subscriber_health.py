"""Subscriber health in SQL: the rate limit's slots, the one probe, the breaker and auto-disable,
with two connections standing for two publisher processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from receiver.core.config import Settings
from receiver.outbound import health, outbox, subscriptions
from tests.support import MASTER_KEY, admin, execute, scalar

LEASE = timedelta(seconds=30)
SETTINGS = Settings(breaker_failures=3, breaker_cooloff=timedelta(seconds=30), disable_after=timedelta(days=5))


async def _subscriber(database_url: str, rate: str | None = None) -> str:
    added = await admin(database_url, lambda c: subscriptions.add(c, MASTER_KEY, "http://127.0.0.1:9/hook"))
    if rate:
        await admin(database_url, lambda c: health.set_rate(c, added.id, health.parse_rate(rate)))
    return added.id


async def _events(conn: psycopg.AsyncConnection[Any], count: int, prefix: str = "h") -> None:
    await conn.execute(
        "INSERT INTO jobs (id, service, status) SELECT %s || i, 'hedra', 'completed' FROM generate_series(1, %s) i",
        (prefix, count),
    )
    await conn.execute(
        "INSERT INTO outbox_events (job_id, status, type, payload) SELECT %s || i, 'completed', 'job.completed',"
        " '{\"data\": {}}'::jsonb FROM generate_series(1, %s) i",
        (prefix, count),
    )
    await outbox.fan_out(conn, limit=1000)


async def _claim(conn: psycopg.AsyncConnection[Any], me: str, **kw: Any) -> list[outbox.Claimed]:
    args: dict[str, Any] = {"limit": 100, "lease": LEASE, "brokers": [], "cap": 100, "in_flight": {}, **kw}
    return await outbox.claim(conn, me=me, **args)


async def test_a_rate_limit_hands_out_slots_one_interval_apart_across_publishers(database_url: str) -> None:
    sub = await _subscriber(database_url, "50/s")
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as one,
        await psycopg.AsyncConnection.connect(database_url) as two,
    ):
        await _events(one, 120)
        first = await _claim(one, "one", horizon=timedelta(milliseconds=500))
        # 500 ms ahead at 50/s: 25 slots, 20 ms apart, in the line's order, starting now.
        assert len(first) == 25
        slots = [c.send_after or 0.0 for c in first]
        assert -0.05 < slots[0] <= 0  # the first slot is now (counted from the statement's end)
        assert [s - slots[0] for s in slots] == pytest.approx([i * 0.02 for i in range(25)], abs=0.001)
        assert all(c.spacing == pytest.approx(0.02) for c in first)
        after_first = scalar(database_url, "SELECT next_send_at FROM subscriptions")
        # A second publisher claiming while the first one's transaction holds the row takes nothing
        # (the gate skips the row rather than wait) ...
        await one.execute("BEGIN")
        await one.execute("SELECT 1 FROM subscriptions WHERE id = %s FOR UPDATE", (sub,))
        assert await _claim(two, "two", horizon=timedelta(seconds=1)) == []
        await two.commit()
        await one.execute("COMMIT")
        # ... and once it is free, takes the slots right after the first publisher's last one.
        second = await _claim(two, "two", horizon=timedelta(seconds=1))
        await two.commit()
        assert len(second) >= 25  # 1 s ahead, less the 500 ms the first claim had handed out
        assert {c.delivery_id for c in first}.isdisjoint(c.delivery_id for c in second)
    after_second = scalar(database_url, "SELECT next_send_at FROM subscriptions")
    assert after_second - after_first == timedelta(milliseconds=20) * len(second)  # no gap, no overlap


async def test_a_subscriber_without_a_limit_is_claimed_as_before(database_url: str) -> None:
    await _subscriber(database_url)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await _events(conn, 30)
        claimed = await _claim(conn, "one")
    assert len(claimed) == 30
    assert all(c.send_after is None and not c.probe for c in claimed)
    assert scalar(database_url, "SELECT next_send_at FROM subscriptions") is None


async def test_an_open_circuit_is_not_claimed_and_after_its_cool_off_one_probe_goes_out(database_url: str) -> None:
    sub = await _subscriber(database_url)
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as one,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as two,
    ):
        await _events(one, 10)
        execute(database_url, "UPDATE subscriptions SET circuit_open_until = now() + interval '1 minute'")
        assert await _claim(one, "one") == []
        execute(database_url, "UPDATE subscriptions SET circuit_open_until = now() - interval '1 second'")
        probes = await _claim(one, "one") + await _claim(two, "two")
    assert len(probes) == 1 and probes[0].probe
    row = await _row(database_url, sub)
    assert row["circuit_probe"] == probes[0].delivery_id
    # Half open for the probe's lease: nobody sends anything else meanwhile.
    assert row["circuit_open_until"] - datetime.now(UTC) == pytest.approx(LEASE, abs=timedelta(seconds=2))


async def _row(database_url: str, sub: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute("SELECT * FROM subscriptions WHERE id = %s", (sub,))
        row = await cursor.fetchone()
        assert row is not None and cursor.description is not None
        return dict(zip([c.name for c in cursor.description], row, strict=True))


async def _report(database_url: str, sub: str, *outcomes: bool, probe: bool = False) -> list[health.Transition]:
    report = health.Report()
    for ok in outcomes:
        report.note(ok, datetime.now(UTC), probe=probe)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await health.record(conn, SETTINGS, {sub: report})


async def test_the_breaker_opens_doubles_its_cool_off_on_failed_probes_and_closes_on_a_success(
    database_url: str,
) -> None:
    sub = await _subscriber(database_url)
    assert await _report(database_url, sub, False, False) == []
    assert (await _row(database_url, sub))["consecutive_failures"] == 2
    opened = await _report(database_url, sub, False)
    assert [t.change for t in opened] == ["circuit_opened"]
    assert opened[0].data()["subscriber_id"] == sub and opened[0].data()["url"] == "http://127.0.0.1:9/hook"
    row = await _row(database_url, sub)
    assert row["circuit_cooloff"] == timedelta(seconds=30)
    # Attempts that were in flight when it opened fail too: no change to the cool-off.
    assert await _report(database_url, sub, False) == []
    assert (await _row(database_url, sub))["circuit_cooloff"] == timedelta(seconds=30)
    cooloffs = []
    for _ in range(8):
        assert await _report(database_url, sub, False, probe=True) == []
        cooloffs.append((await _row(database_url, sub))["circuit_cooloff"])
    assert cooloffs[:6] == [timedelta(seconds=30 * 2**i) for i in range(1, 6)] + [timedelta(minutes=30)]
    assert cooloffs[6:] == [timedelta(minutes=30)] * 2  # doubled up to 30 min, no further
    closed = await _report(database_url, sub, True, probe=True)
    assert [t.change for t in closed] == ["circuit_closed"]
    row = await _row(database_url, sub)
    assert (row["circuit_open_until"], row["circuit_cooloff"], row["consecutive_failures"]) == (None, None, 0)
    assert row["failing_since"] is None


async def test_a_success_between_failures_restarts_the_count(database_url: str) -> None:
    sub = await _subscriber(database_url)
    assert await _report(database_url, sub, False, False, True, False, False) == []
    assert (await _row(database_url, sub))["consecutive_failures"] == 2
    assert [t.change for t in await _report(database_url, sub, False)] == ["circuit_opened"]


async def test_a_subscriber_failing_for_the_whole_window_is_disabled_and_enable_starts_afresh(
    database_url: str,
) -> None:
    sub = await _subscriber(database_url)
    await _report(database_url, sub, False)
    # Five days ago, no success since (and the breaker's own cool-off in between).
    execute(database_url, "UPDATE subscriptions SET failing_since = now() - interval '5 days 1 minute'")
    changes = await _report(database_url, sub, False, probe=True)
    assert [t.change for t in changes] == ["subscriber_disabled"]
    row = await _row(database_url, sub)
    assert row["state"] == "disabled"
    assert row["disabled_reason"].startswith("no successful delivery since ")
    assert row["disabled_reason"].endswith("(RECEIVER_DISABLE_AFTER 5d)")
    assert changes[0].data()["reason"] == row["disabled_reason"]
    await admin(database_url, lambda c: subscriptions.set_enabled(c, sub, True))
    row = await _row(database_url, sub)
    assert (row["state"], row["consecutive_failures"], row["failing_since"], row["circuit_open_until"]) == (
        "enabled",
        0,
        None,
        None,
    )


async def test_a_released_probe_lets_the_next_claim_send_another(database_url: str) -> None:
    sub = await _subscriber(database_url)
    execute(database_url, "UPDATE subscriptions SET circuit_open_until = now() + interval '30 seconds'")
    report = health.Report(probe="released")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await health.record(conn, SETTINGS, {sub: report})
    assert scalar(database_url, "SELECT circuit_open_until <= now() FROM subscriptions") is True


def test_rates_parse_or_say_how_to_write_them() -> None:
    assert str(health.parse_rate("50/s")) == "50/s"
    assert health.parse_rate("300/m") == health.Rate(300, "m")
    assert health.parse_rate(" none ") is None
    assert health.Rate(50, "s").interval == timedelta(milliseconds=20)
    for bad in ("50", "50/d", "0/s", "-1/s", "1.5/s", "5000/s", "fifty/s", "\u0665/s"):
        with pytest.raises(Exception, match="--rate"):
            health.parse_rate(bad)
