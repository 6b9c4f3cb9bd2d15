"""attempt_minutes, the console's delivery figures: a statement trigger on delivery_attempts counts
each batch by minute, subscriber and send-time bucket; the figures read from it equal counting the
attempts, their percentiles within a bucket's width of the exact ones; folds keep the sums and
migration 0011 fills in the last 25 hours."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from receiver.core import migrate
from receiver.outbound import deliveries, subscriptions
from tests.support import MASTER_KEY, admin, execute, query, scalar

TRUTH = """
SELECT date_trunc('minute', at), subscription_id, receiver_latency_bucket(duration_ms), count(*),
       count(*) FILTER (WHERE outcome = 'delivered')
FROM delivery_attempts GROUP BY 1, 2, 3
"""
SUMMED = """
SELECT minute, subscription_id, bucket, sum(attempts), sum(delivered) FROM attempt_minutes GROUP BY 1, 2, 3
"""
ATTEMPT = """
INSERT INTO delivery_attempts (delivery_id, subscription_id, attempt, at, duration_ms, outcome, status, error)
SELECT %s, %s, 1, v.at, v.ms, v.outcome, v.status, v.error
FROM unnest(%s::timestamptz[], %s::integer[], %s::text[], %s::integer[], %s::text[])
    AS v(at, ms, outcome, status, error)
"""


def _as_dict(rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], tuple[int, ...]]:
    return {tuple(row[:3]): tuple(int(value) for value in row[3:]) for row in rows}


def assert_counts_are_the_attempts(database_url: str) -> None:
    assert _as_dict(query(database_url, SUMMED)) == _as_dict(query(database_url, TRUTH))


async def _delivery(database_url: str, name: str) -> tuple[str, int]:
    """A subscriber and one delivery to it (of a job event), which attempts can name."""
    added = await admin(database_url, lambda conn: subscriptions.add(conn, MASTER_KEY, f"http://127.0.0.1:9/{name}"))
    subscription_id = added[0].id if isinstance(added, tuple) else added.id
    with psycopg.connect(database_url, autocommit=True) as conn:
        event = conn.execute(
            "SELECT receiver_apply_job_event(%s, 'completed', 'poll', NULL, NULL, NULL, 'hedra', NULL, NULL, NULL,"
            " NULL, NULL, NULL)",
            (f"job-{name}",),
        ).fetchone()
        assert event is not None
        row = conn.execute(
            "INSERT INTO deliveries (event_id, subscription_id, job_id, event_seq)"
            " SELECT id, %s, job_id, seq FROM outbox_events WHERE id = %s RETURNING id",
            (subscription_id, event[0]),
        ).fetchone()
        assert row is not None
    return subscription_id, int(row[0])


def _attempts(database_url: str, delivery: tuple[str, int], rows: list[tuple[datetime, int | None, str]]) -> None:
    """One statement, as the publisher writes a batch."""
    subscription_id, delivery_id = delivery
    execute(
        database_url,
        ATTEMPT,
        (
            delivery_id,
            subscription_id,
            [at for at, _, _ in rows],
            [ms for _, ms, _ in rows],
            [outcome for _, _, outcome in rows],
            [200 if outcome == "delivered" else 503 for _, _, outcome in rows],
            [None if outcome == "delivered" else "HTTP 503" for _, _, outcome in rows],
        ),
    )


def test_buckets_are_a_tenth_of_a_decade_and_hold_their_milliseconds(database_url: str) -> None:
    samples = [0, 1, 2, 3, 9, 10, 11, 99, 100, 101, 999, 1000, 1001, 9999, 10_000, 30_000, 120_000]
    samples += random.Random(7).sample(range(1, 200_000), 300)
    found = query(database_url, "SELECT ms, receiver_latency_bucket(ms) FROM unnest(%s::integer[]) AS ms", (samples,))
    for ms, bucket in found:
        low, high = deliveries.latency_bounds(bucket)
        assert low <= ms < high, (ms, bucket, low, high)
    buckets = dict(found)
    assert (buckets[1], buckets[10], buckets[100], buckets[1000], buckets[10_000]) == (1, 11, 21, 31, 41)
    assert scalar(database_url, "SELECT receiver_latency_bucket(NULL)") == -1


async def test_each_batch_is_counted_by_minute_subscriber_and_bucket(database_url: str) -> None:
    first, second = await _delivery(database_url, "a"), await _delivery(database_url, "b")
    now = datetime.now(UTC)
    chance = random.Random(3)
    for batch in range(6):
        for delivery in (first, second):
            rows = [
                (
                    now - timedelta(minutes=chance.randrange(5)),
                    chance.choice([None, 0, 3, 40, 41, 250, 2000]),
                    chance.choice(["delivered", "delivered", "retrying", "dead"]),
                )
                for _ in range(batch * 7 + 1)
            ]
            _attempts(database_url, delivery, rows)
    assert_counts_are_the_attempts(database_url)
    # Rolled back with its statement's transaction.
    with psycopg.connect(database_url) as conn:
        conn.execute(ATTEMPT, (first[1], first[0], [now], [5], ["delivered"], [200], [None]))
        conn.rollback()
    assert_counts_are_the_attempts(database_url)
    # Folded into one row per key, the sums unchanged.
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT receiver_fold_minutes(%s)", (now + timedelta(minutes=1),)).fetchone() != (0,)
    assert_counts_are_the_attempts(database_url)
    assert scalar(database_url, "SELECT max(writer) FROM attempt_minutes") == 0


async def test_figures_are_the_attempts_counted_with_percentiles_within_a_bucket(database_url: str) -> None:
    quiet, busy = await _delivery(database_url, "quiet"), await _delivery(database_url, "busy")
    now = datetime.now(UTC)
    chance = random.Random(11)
    durations = [int(chance.lognormvariate(4, 1)) for _ in range(5000)]  # median ~55 ms, a long tail
    outcomes = ["delivered" if chance.random() < 0.9 else "retrying" for _ in durations]
    rows = [(now - timedelta(seconds=chance.randrange(1800)), ms, o) for ms, o in zip(durations, outcomes, strict=True)]
    for start in range(0, len(rows), 500):
        _attempts(database_url, busy, rows[start : start + 500])
    _attempts(database_url, busy, [(now - timedelta(hours=3), 5, "dead")])  # outside the hour
    found = await admin(database_url, lambda conn: deliveries.figures(conn, now - timedelta(hours=1)))
    figures = found[busy[0]]
    assert figures.attempts == 5000 and figures.delivered == outcomes.count("delivered")
    exact = query(
        database_url,
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)"
        " FROM unnest(%s::integer[]) AS ms",
        (durations,),
    )[0]
    assert figures.p50_ms == pytest.approx(exact[0], rel=0.13)
    assert figures.p99_ms == pytest.approx(exact[1], rel=0.13)
    assert figures.last_failure == "HTTP 503" and figures.last_failure_at is not None
    assert figures.last_failure_at > now - timedelta(hours=1)
    assert found[quiet[0]].attempts == 0 and found[quiet[0]].p50_ms is None
    day = await admin(database_url, lambda conn: deliveries.figures(conn, now - timedelta(days=1)))
    assert day[busy[0]].attempts == 5001


def test_quantiles_of_buckets() -> None:
    assert deliveries.latency_quantile({}, 0.5) is None
    assert deliveries.latency_quantile({0: 10}, 0.5) == pytest.approx(0.5)
    # 100 attempts between 10 and 12.6 ms (bucket 11): the median halfway through it.
    low, high = deliveries.latency_bounds(11)
    assert deliveries.latency_quantile({11: 100}, 0.5) == pytest.approx(low + (high - low) / 2)
    # 98 at 1 ms and 2 around a second: the 99th of 100 is halfway through the second's bucket.
    low, high = deliveries.latency_bounds(31)
    assert deliveries.latency_quantile({1: 98, 31: 2}, 0.99) == pytest.approx(low + (high - low) / 2)


async def test_migration_0011_counts_the_last_25_hours_of_attempts(database_url: str) -> None:
    delivery = await _delivery(database_url, "m")
    migrate.downgrade(database_url, "0010")
    now = datetime.now(UTC)
    _attempts(
        database_url,
        delivery,
        [(now, 12, "delivered"), (now - timedelta(hours=24), 900, "retrying"), (now - timedelta(hours=26), 3, "dead")],
    )
    migrate.upgrade(database_url)
    assert _as_dict(query(database_url, SUMMED)) == _as_dict(
        query(database_url, TRUTH.replace("GROUP BY", "WHERE at > now() - interval '25 hours' GROUP BY"))
    )
    assert scalar(database_url, "SELECT sum(attempts) FROM attempt_minutes") == 2
