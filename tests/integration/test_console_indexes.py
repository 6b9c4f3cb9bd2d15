"""The console's searches go through the indexes migration 0007 made for them.

bench/console.py times them on a million jobs; this checks, on a few thousand rows, that each
query the console runs (through the same functions) still has the index it was measured with:
a query rewritten so that its predicate or order no longer matches, or an index dropped, shows
here as a plan without it. Sequential scans are off, as they would be too costly on a large table.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from receiver.core import db
from receiver.inbound import endpoints
from receiver.jobs import search
from receiver.outbound import deliveries, outbox, subscriptions
from tests.conftest import create_database, drop_database
from tests.support import query

SUBSCRIBER = "sub_0000000000000001"

# A month of 3,000 jobs: statuses, services and tags in the proportions bench/console.py fills;
# one outbox event and two deliveries per job (1 % dead, fewer for SUBSCRIBER; a few pending), one
# attempt each;
# webhooks on `default` alone, as on most receivers.
_DATA = """
INSERT INTO jobs (id, service, status, first_seen_at, tags)
SELECT 'job_' || i,
       (ARRAY['hedra', 'kling', 'veo', 'runway', 'sora'])[1 + i % 5],
       CASE WHEN i % 20 = 0 THEN 'failed' WHEN i % 500 = 7 THEN 'processing' ELSE 'completed' END,
       now() - interval '30 days' + i * interval '864 seconds',
       CASE WHEN i % 5 < 4 THEN jsonb_build_object('team', 'team' || i % 6, 'campaign', 'c' || i % 250) END
FROM generate_series(1, 3000) AS i;
INSERT INTO subscriptions (id, kind, url) VALUES
  ('sub_0000000000000001', 'http', 'https://a.example/hook'),
  ('sub_0000000000000002', 'http', 'https://b.example/hook');
INSERT INTO outbox_events (job_id, status, type, payload, created_at)
SELECT id, status, 'job.' || status, '{}'::jsonb, first_seen_at FROM jobs ORDER BY first_seen_at;
INSERT INTO deliveries (event_id, subscription_id, job_id, event_seq, state, attempts, created_at)
SELECT o.id, s.id, o.job_id, o.seq,
       CASE WHEN o.seq % 100 = 3 AND (s.id <> 'sub_0000000000000001' OR o.seq % 1000 = 3) THEN 'dead'
            WHEN o.seq % 300 = 5 THEN 'pending' ELSE 'delivered' END, 1, o.created_at
FROM outbox_events o CROSS JOIN subscriptions s ORDER BY o.seq, s.id;
INSERT INTO delivery_attempts (delivery_id, subscription_id, attempt, at, duration_ms, outcome, status)
SELECT id, subscription_id, 1, created_at, 40, CASE WHEN state = 'dead' THEN 'dead' ELSE 'delivered' END,
       CASE WHEN state = 'dead' THEN 500 ELSE 200 END
FROM deliveries;
INSERT INTO inbound_webhooks (endpoint, idempotency_key, body_sha256, job_id, status, headers, received_at)
SELECT 'default', 'k' || i, '\\x00', 'job_' || i, 'completed', '{}',
       now() - interval '30 days' + i * interval '432 seconds'
FROM generate_series(1, 6000) AS i;
ANALYZE;
"""


@pytest.fixture(scope="module")
def filled_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    """One database for the module: the tests only read it."""
    name = f"receiver_test_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name, template=template_database)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(_DATA.encode())
        yield url
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
async def engine(filled_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(filled_url, pool_size=1)
    yield engine
    await engine.dispose()


async def plan(engine: AsyncEngine, run: Callable[[AsyncConnection], Awaitable[Any]]) -> str:
    """EXPLAIN of the last statement `run` sent, with its own parameters."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent.append((statement, parameters))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SET enable_seqscan = off")
            sent.clear()
            await run(conn)
            statement, parameters = sent[-1]
            rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            return "\n".join(row[0] for row in rows)
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", capture)


def jobs(filters: search.Filters) -> Callable[[AsyncConnection], Awaitable[Any]]:
    async def run(conn: AsyncConnection) -> Any:
        return (await conn.execute(search.query(filters, limit=50))).all()

    return run


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (search.Filters(status="failed"), "ix_jobs_status_first_seen_at_id"),
        (search.Filters(status="queued"), "ix_jobs_status_first_seen_at_id"),
        (search.Filters(service="nosuch"), "ix_jobs_service_first_seen_at_id"),
        (search.Filters(tags={"campaign": "c42"}), "ix_jobs_tags"),
        (search.Filters(tags={"team": "nosuch"}), "ix_jobs_tags"),
    ],
)
async def test_job_searches_use_their_index(engine: AsyncEngine, filters: search.Filters, index: str) -> None:
    assert index in await plan(engine, jobs(filters))


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (deliveries.Filters(state="dead"), "ix_deliveries_dead_id"),
        (deliveries.Filters(state="dead", subscription_id=SUBSCRIBER), "ix_deliveries_dead_id"),
    ],
)
async def test_dead_deliveries_newest_first_use_their_index(
    engine: AsyncEngine, filters: deliveries.Filters, index: str
) -> None:
    assert index in await plan(engine, lambda conn: deliveries.listing(conn, filters, limit=51))


async def test_the_last_accepted_webhook_is_one_probe_per_endpoint(engine: AsyncEngine) -> None:
    found = await plan(engine, lambda conn: endpoints.last_accepted(conn, ["default", "never-used"]))
    assert "ix_inbound_webhooks_endpoint_received_at" in found


async def test_a_subscribers_last_failure_reads_only_failures(engine: AsyncEngine) -> None:
    since = datetime.now(UTC) - timedelta(hours=24)
    assert "ix_delivery_attempts_failed" in await plan(engine, lambda conn: deliveries.figures(conn, since))


async def test_the_latest_failures_are_a_range_of_the_failures_index_per_subscriber(engine: AsyncEngine) -> None:
    """The overview's recent failures: the index leads with the subscriber, so a time range across
    all of them would walk every failure ever kept."""
    since = datetime.now(UTC) - timedelta(hours=1)
    found = await plan(engine, lambda conn: deliveries.recent(conn, failed_since=since, limit=8))
    scan = found[found.index("ix_delivery_attempts_failed") :]
    assert re.search(r"Index Cond: \(\(subscription_id = subscriptions\.id\) AND \(at >=", scan), found


async def test_subscribers_are_counted_through_the_partial_indexes(engine: AsyncEngine, filled_url: str) -> None:
    """The console lists subscribers on four pages, the overview every few seconds: pending and dead
    are counted in their partial indexes, delivered (every other row) only when asked."""
    assert "ix_deliveries_dead" in await plan(engine, subscriptions.list_all)
    async with engine.connect() as conn:
        listed = sorted((s.id, s.pending, s.dead, s.delivered) for s in await subscriptions.list_all(conn))
        counted = sorted(
            (s.id, s.pending, s.dead, s.delivered) for s in await subscriptions.list_all(conn, count_delivered=True)
        )
    expected = query(
        filled_url,
        "SELECT subscription_id, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead'), "
        "count(*) FILTER (WHERE state = 'delivered') FROM deliveries GROUP BY 1 ORDER BY 1",
    )
    assert counted == [tuple(row) for row in expected]
    assert listed == [(sub, pending, dead, None) for sub, pending, dead, _ in expected]
    assert all(pending and dead for _, pending, dead, _ in expected)


async def test_the_backlog_finds_the_oldest_waiting_event_and_delivery_by_seq(
    engine: AsyncEngine, filled_url: str
) -> None:
    """The overview and every metrics scrape read the backlog: the oldest waiting event is the
    first by seq in the pending index, not a min() over every waiting row."""
    async with engine.connect() as conn:
        backlog = await outbox.backlog(await db.driver_connection(conn))
    [(events, oldest_event, pending, oldest_delivery, dead)] = query(
        filled_url,
        "SELECT (SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL), "
        "(SELECT extract(epoch FROM now() - min(created_at)) FROM outbox_events WHERE dispatched_at IS NULL), "
        "(SELECT count(*) FROM deliveries WHERE state = 'pending'), "
        "(SELECT extract(epoch FROM now() - min(o.created_at)) FROM deliveries d "
        " JOIN outbox_events o ON o.id = d.event_id WHERE d.state = 'pending'), "
        "(SELECT count(*) FROM deliveries WHERE state = 'dead')",
    )
    assert (backlog.undispatched, backlog.pending, backlog.dead) == (events, pending, dead)
    assert backlog.undispatched_oldest_seconds == pytest.approx(float(oldest_event), abs=5)
    assert backlog.pending_oldest_seconds == pytest.approx(float(oldest_delivery), abs=5)
    assert float(oldest_event) > float(oldest_delivery) > 86_400  # the data puts them apart
