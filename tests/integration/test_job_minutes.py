"""job_minutes, the overview's jobs per minute, service and status: kept by triggers on jobs,
whoever writes them, equal to counting the jobs, under concurrent writers, folds and rollbacks,
and filled by migration 0011 from the jobs already there. (attempt_minutes: test_attempt_minutes.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from receiver.core import db, migrate, minutes
from receiver.jobs import search
from receiver.outbound import outbox
from tests.support import admin, eventually, execute, query, scalar

# Every (minute, service, status) the jobs have, counted from the jobs themselves.
TRUTH = """
SELECT date_trunc('minute', first_seen_at), coalesce(service, ''), status, count(*)
FROM jobs GROUP BY 1, 2, 3
"""
SUMMED = "SELECT minute, service, status, sum(jobs) FROM job_minutes GROUP BY 1, 2, 3 HAVING sum(jobs) <> 0"
APPLY = """
SELECT receiver_apply_job_event(%s, %s, 'poll', NULL, NULL, NULL, %s, NULL, NULL, NULL, NULL, NULL, NULL)
"""
SERVICES = ("hedra", "sora", None)
STATUSES = ("queued", "processing", "completed", "failed")


def _as_dict(rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], int]:
    return {tuple(row[:-1]): int(row[-1]) for row in rows}


def assert_counts_are_the_jobs(database_url: str) -> None:
    assert _as_dict(query(database_url, SUMMED)) == _as_dict(query(database_url, TRUTH))


def test_every_kind_of_write_moves_the_count(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(APPLY, ("a", "queued", "hedra"))  # a webhook or poll creating a job
        conn.execute(APPLY, ("a", "processing", None))  # a status change, service left as it was
        conn.execute(APPLY, ("a", "queued", None))  # out of order: not applied, nothing moves
        conn.execute(APPLY, ("b", "queued", None))  # a job with no service yet
        conn.execute(APPLY, ("b", "completed", "sora"))  # ... then one: it moves service and status
        conn.execute("SELECT receiver_register_job('c', 'hedra', NULL, 'ref', NULL, NULL, NULL)")
        conn.execute("SELECT receiver_register_job('b', 'hedra', NULL, 'ref', NULL, NULL, NULL)")  # a merge
        conn.execute("UPDATE jobs SET metadata = '{}' WHERE id = 'a'")  # moves nothing
        conn.execute("UPDATE jobs SET first_seen_at = first_seen_at - interval '3 hours' WHERE id = 'c'")
        conn.execute("INSERT INTO jobs (id, status) VALUES ('d', 'queued')")  # an operator's SQL
        conn.execute("DELETE FROM jobs WHERE id = 'd'")
    assert_counts_are_the_jobs(database_url)
    assert scalar(database_url, "SELECT count(*) FROM job_minutes WHERE jobs <> 0 AND writer = 0") == 0
    assert scalar(database_url, "SELECT sum(jobs) FROM job_minutes") == 3


def test_a_rolled_back_write_takes_its_count_back(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(APPLY, ("a", "queued", "hedra"))
        conn.commit()
        conn.execute(APPLY, ("a", "completed", None))
        conn.execute(APPLY, ("b", "queued", "hedra"))
        conn.rollback()
    assert_counts_are_the_jobs(database_url)
    assert scalar(database_url, "SELECT sum(jobs) FROM job_minutes") == 1


def test_folding_keeps_the_sums_and_leaves_one_row_per_key_and_minute(database_url: str) -> None:
    past = datetime.now(UTC) - timedelta(hours=2)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for number in range(30):
            conn.execute(
                "INSERT INTO jobs (id, service, status, first_seen_at) VALUES (%s, 'hedra', 'queued', %s)",
                (f"old-{number}", past + timedelta(seconds=number * 10)),
            )
        conn.execute(APPLY, ("now", "queued", "hedra"))
    # Rows of several backends for the same keys, as a busy server leaves them.
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("UPDATE jobs SET status = 'completed' WHERE id LIKE 'old-1%%'")
    before_now = datetime.now(UTC).replace(second=0, microsecond=0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        folded = conn.execute("SELECT receiver_fold_minutes(%s)", (before_now,)).fetchone()
    assert folded is not None and folded[0] > 0
    assert_counts_are_the_jobs(database_url)
    past_rows = query(
        database_url,
        "SELECT minute, service, status, count(*), min(writer), max(writer) FROM job_minutes"
        " WHERE minute < %s GROUP BY 1, 2, 3",
        (before_now,),
    )
    assert past_rows and all(row[3] == 1 and row[4] == row[5] == 0 for row in past_rows)
    # The current minute is left to its writers.
    assert scalar(database_url, "SELECT min(writer) FROM job_minutes WHERE minute >= %s", (before_now,)) > 0


def test_one_fold_at_a_time(database_url: str) -> None:
    execute(database_url, APPLY, ("a", "queued", "hedra"))
    later = datetime.now(UTC) + timedelta(minutes=5)
    with psycopg.connect(database_url) as holder, psycopg.connect(database_url, autocommit=True) as conn:
        holder.execute("SELECT pg_advisory_xact_lock(4611686018427388011)")
        assert conn.execute("SELECT receiver_fold_minutes(%s)", (later,)).fetchone() == (0,)
        holder.rollback()
        assert conn.execute("SELECT receiver_fold_minutes(%s)", (later,)).fetchone() == (1,)
    assert_counts_are_the_jobs(database_url)


def test_a_fold_never_waits_for_a_writer(database_url: str) -> None:
    """A webhook transaction still open holds its backend's rows: the fold leaves them for next
    time rather than wait (and a writer never waits for the fold beyond one statement)."""
    insert = "INSERT INTO jobs (id, service, status, first_seen_at) VALUES (%s, 'hedra', 'queued', %s)"
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    execute(database_url, insert, ("a", minute))
    later = datetime.now(UTC) + timedelta(minutes=5)
    with psycopg.connect(database_url) as writing, psycopg.connect(database_url, autocommit=True) as conn:
        writing.execute(insert, ("b", minute))
        writing.commit()
        writing.execute(insert, ("c", minute))  # adds to its row of that minute, and holds it
        conn.execute("SET lock_timeout = '2s'")
        folded = conn.execute("SELECT receiver_fold_minutes(%s)", (later,)).fetchone()
        assert folded == (1,)  # the first connection's row; the open transaction's is left
        writing.commit()
        assert conn.execute("SELECT receiver_fold_minutes(%s)", (later,)).fetchone() == (1,)
    assert_counts_are_the_jobs(database_url)
    assert query(database_url, "SELECT writer, jobs FROM job_minutes") == [(0, 3)]


async def test_concurrent_writers_and_folds_count_every_job_once(database_url: str) -> None:
    """Eight connections create and advance jobs at once (some in transactions that roll back)
    while another folds every minute back to back: the sums stay those of the jobs."""
    stop = asyncio.Event()

    async def writer(number: int) -> None:
        chance = random.Random(number)
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            for step in range(150):
                job = f"w{number}-{chance.randrange(40)}"
                status = chance.choice(STATUSES)
                await conn.execute(APPLY, (job, status, chance.choice(SERVICES)))
                if step % 7 == 0:
                    await conn.execute(
                        "UPDATE jobs SET first_seen_at = first_seen_at - interval '1 minute' WHERE id = %s", (job,)
                    )
                if chance.random() < 0.2:
                    await conn.rollback()
                else:
                    await conn.commit()

    async def folder() -> int:
        folds = 0
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            while not stop.is_set():
                await minutes.fold(conn, datetime.now(UTC) + timedelta(minutes=1))
                folds += 1
        return folds

    folding = asyncio.create_task(folder())
    await asyncio.gather(*(writer(number) for number in range(8)))
    stop.set()
    assert await folding > 0
    assert_counts_are_the_jobs(database_url)


async def test_counts_are_what_the_overview_shows(database_url: str) -> None:
    old = datetime.now(UTC) - timedelta(hours=3)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(APPLY, ("a", "queued", "hedra"))
        conn.execute(APPLY, ("b", "completed", "hedra"))
        conn.execute(APPLY, ("c", "completed", "hedra"))
        conn.execute(APPLY, ("d", "failed", None))
        conn.execute(APPLY, ("e", "queued", "sora"))
        conn.execute("UPDATE jobs SET first_seen_at = %s WHERE id = 'e'", (old,))

    async def counts(since: datetime) -> list[tuple[str | None, str, int]]:
        return await admin(database_url, lambda conn: search.counts(conn, since))

    hour = await counts(datetime.now(UTC) - timedelta(hours=1))
    assert hour[0] == ("hedra", "completed", 2)
    assert set(hour) == {("hedra", "completed", 2), ("hedra", "queued", 1), (None, "failed", 1)}
    day = await counts(datetime.now(UTC) - timedelta(days=1))
    assert ("sora", "queued", 1) in day and len(day) == 4


def test_migration_0011_counts_the_last_25_hours_of_jobs(database_url: str) -> None:
    migrate.downgrade(database_url, "0010")
    now = datetime.now(UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for number, age in enumerate((timedelta(0), timedelta(hours=5), timedelta(hours=24), timedelta(hours=26))):
            for service in ("hedra", None):
                conn.execute(
                    "INSERT INTO jobs (id, service, status, first_seen_at) VALUES (%s, %s, 'completed', %s)",
                    (f"{number}-{service}", service, now - age),
                )
    migrate.upgrade(database_url)
    summed = _as_dict(query(database_url, SUMMED))
    truth = _as_dict(
        query(database_url, TRUTH.replace("GROUP BY", "WHERE first_seen_at > now() - interval '25 hours' GROUP BY"))
    )
    assert summed == truth and sum(summed.values()) == 6
    # From here on the triggers keep it.
    execute(database_url, "UPDATE jobs SET status = 'failed' WHERE first_seen_at > now() - interval '25 hours'")
    assert scalar(database_url, "SELECT sum(jobs) FROM job_minutes WHERE status = 'failed'") == 6


async def test_the_serve_process_folds_past_minutes(database_url: str) -> None:
    past = datetime.now(UTC) - timedelta(minutes=30)
    insert = "INSERT INTO jobs (id, service, status, first_seen_at) VALUES ('a', 'x', 'queued', %s)"
    execute(database_url, insert, (past,))
    pool = db.create_pool(database_url, size=1, timeout=timedelta(seconds=5))
    await pool.open()
    folding = asyncio.create_task(minutes.run(pool, interval=0.05))
    try:
        assert await eventually(
            lambda: asyncio.to_thread(scalar, database_url, "SELECT max(writer) = 0 FROM job_minutes")
        )
    finally:
        folding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await folding
        await pool.close()
    assert_counts_are_the_jobs(database_url)


async def test_prune_takes_folded_minutes_and_never_waits_for_a_writer(database_url: str) -> None:
    insert = "INSERT INTO jobs (id, service, status, first_seen_at) VALUES (%s, 'hedra', 'queued', %s)"
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    execute(database_url, insert, ("a", minute))
    execute(database_url, "SELECT receiver_fold_minutes(%s)", (datetime.now(UTC),))
    with psycopg.connect(database_url) as writing:
        writing.execute(insert, ("b", minute))
        writing.commit()
        writing.execute(insert, ("c", minute))  # holds its own row of that minute
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute("SET lock_timeout = '2s'")
            pruned = await outbox.prune(conn, datetime.now(UTC))
            await conn.commit()
        writing.commit()
    assert pruned.job_minutes == 1  # the folded row; the writer's waits for the next fold
    assert query(database_url, "SELECT writer <> 0, jobs FROM job_minutes") == [(True, 2)]
