"""The outbox SQL under concurrency: what keeps a job's events in order."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg

from receiver.outbound import outbox, subscriptions
from tests.support import MASTER_KEY, admin, doitong_body, execute, running, scalar, settings_for


async def test_a_second_fan_out_waits_for_the_first_instead_of_taking_later_events(
    database_url: str, tmp_path: Path
) -> None:
    await admin(database_url, lambda c: subscriptions.add(c, MASTER_KEY, "http://127.0.0.1:9/hook"))
    async with running(settings_for(database_url, tmp_path)) as receiver:
        for status in ("queued", "processing", "rendering", "completed"):
            assert (await receiver.post(doitong_body("job-fan", status))).status_code == 200
    first = await psycopg.AsyncConnection.connect(database_url)  # a transaction left open
    second = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        assert (await outbox.fan_out(first, limit=2)).events == 2  # queued, processing: not committed yet
        # Without the gate this takes rendering and completed, and committing them first would
        # let `completed` be claimed before `queued` has a delivery row at all.
        assert (await outbox.fan_out(second, limit=10)).events == 0
        await first.commit()
        assert await outbox.fan_out(second, limit=10) == outbox.FannedOut(events=2, deliveries=2)
    finally:
        await first.close()
        await second.close()
    seqs = [scalar(database_url, "SELECT array_agg(event_seq ORDER BY id) FROM deliveries WHERE job_id = 'job-fan'")]
    assert seqs[0] == sorted(seqs[0])


async def test_statistics_are_refreshed_when_the_deliveries_table_has_doubled(database_url: str) -> None:
    def reltuples() -> float:
        return float(scalar(database_url, "SELECT reltuples FROM pg_class WHERE oid = 'deliveries'::regclass"))

    await admin(database_url, lambda c: subscriptions.add(c, MASTER_KEY, "http://127.0.0.1:9/hook"))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO jobs (id, service, status) SELECT 'stats-' || i, 'hedra', 'completed'"
            " FROM generate_series(1, 300) i"
        )
        await conn.execute(
            "INSERT INTO outbox_events (job_id, status, type, payload) SELECT 'stats-' || i,"
            " 'completed', 'job.completed', '{\"data\": {}}'::jsonb FROM generate_series(1, 300) i"
        )
        fanned = await outbox.fan_out(conn, limit=1000)
        assert fanned == outbox.FannedOut(events=300, deliveries=300)
        assert reltuples() < 0  # never analyzed
        assert await outbox.keep_statistics(conn, fanned.deliveries) == "analyzed"
        assert reltuples() == 300
        # 299 more rows would not double it: the estimate is good enough, no ANALYZE.
        assert await outbox.keep_statistics(conn, 299) == "fresh"
        assert await outbox.keep_statistics(conn, 300) == "analyzed"
        # A VACUUM (here: a lock of the same strength) holding the table: skipped, not waited for.
        async with await psycopg.AsyncConnection.connect(database_url) as vacuum:
            await vacuum.execute("LOCK TABLE deliveries IN SHARE UPDATE EXCLUSIVE MODE")
            assert await outbox.keep_statistics(conn, 300) == "skipped"
    # A role that owns neither the table nor the database is told so (PostgreSQL would only warn).
    role = "receiver_stats_" + uuid.uuid4().hex[:8]
    execute(database_url, f"CREATE ROLE {role}")
    try:
        execute(database_url, f"GRANT {role} TO current_user")
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other:
            await other.execute(f"SET ROLE {role}")
            assert await outbox.keep_statistics(other, 10**6) == "not_allowed"
            await other.execute("RESET ROLE")
            assert await outbox.keep_statistics(other, 10**6) == "analyzed"
    finally:
        execute(database_url, f"DROP ROLE {role}")
