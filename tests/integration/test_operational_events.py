"""Operational events in PostgreSQL: who receives them, delivery_dead from any statement, no loops,
once per window across processes, and the release before 0010 on this schema."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from prometheus_client import REGISTRY

from receiver.core import db
from receiver.core.config import Burst
from receiver.inbound import outcomes
from receiver.outbound import forgeries, operational, outbox, subscriptions
from tests.support import MASTER_KEY, admin, doitong_body, eventually, query, running, scalar, settings_for


async def _subscribe(database_url: str, events: list[str] | None = None) -> str:
    added = await admin(
        database_url, lambda c: subscriptions.add(c, MASTER_KEY, "http://127.0.0.1:9/hook", event_types=events)
    )
    return added.id


async def _connect(database_url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(database_url, autocommit=True)


def _receivers(database_url: str, event_id: uuid.UUID) -> set[str]:
    return {
        row[0] for row in query(database_url, "SELECT subscription_id FROM deliveries WHERE event_id = %s", (event_id,))
    }


async def test_only_subscriptions_that_ask_by_type_receive_and_none_about_itself(database_url: str) -> None:
    everything = await _subscribe(database_url)  # no filter: every job event, never an operational one
    jobs_only = await _subscribe(database_url, ["job.completed"])
    wildcard = await _subscribe(database_url, ["operational.*"])
    exact = await _subscribe(database_url, ["operational.circuit_opened", "job.*"])
    other_type = await _subscribe(database_url, ["operational.jobs_stale"])
    async with await _connect(database_url) as conn:
        about_other = await operational.emit(
            conn, "operational.circuit_opened", {"subscriber_id": "sub_elsewhere", "url": "http://x/"}
        )
        about_wildcard = await operational.emit(
            conn, "operational.circuit_opened", {"subscriber_id": wildcard, "url": "http://127.0.0.1:9/hook"}
        )
        about_exact = await operational.emit(
            conn, "operational.circuit_closed", {"subscriber_id": exact, "url": "http://127.0.0.1:9/hook"}
        )
        fanned = await outbox.fan_out(conn)
    assert fanned.events == 3
    assert _receivers(database_url, about_other) == {wildcard, exact}
    assert _receivers(database_url, about_wildcard) == {exact}  # never to the subscriber it is about
    assert _receivers(database_url, about_exact) == {wildcard}  # exact asked for circuit_opened only
    assert {everything, jobs_only, other_type}.isdisjoint(
        row[0] for row in query(database_url, "SELECT subscription_id FROM deliveries")
    )
    # The line a delivery keeps order in is what the event is about.
    lines = query(database_url, "SELECT DISTINCT job_id FROM deliveries WHERE event_id = %s", (about_other,))
    assert lines == [("operational:subscriber:sub_elsewhere",)]
    envelope = orjson.loads(
        scalar(database_url, "SELECT payload::text FROM outbox_events WHERE id = %s", (about_other,))
    )
    assert envelope["id"] == str(about_other) and envelope["type"] == "operational.circuit_opened"
    assert envelope["data"] == {"subscriber_id": "sub_elsewhere", "url": "http://x/"}
    assert envelope["timestamp"].endswith("Z")


async def test_job_wildcard_and_filters_still_route_job_events(database_url: str) -> None:
    everything = await _subscribe(database_url)
    wildcard = await _subscribe(database_url, ["job.*"])
    failed_only = await _subscribe(database_url, ["job.failed"])
    operations = await _subscribe(database_url, ["operational.*"])
    async with await _connect(database_url) as conn:
        await conn.execute(
            "SELECT receiver_apply_job_event('j1', 'completed', 'poll', NULL, NULL, NULL,"
            " 'hedra', NULL, NULL, NULL, NULL, NULL, NULL)"
        )
        await outbox.fan_out(conn)
    received = {row[0] for row in query(database_url, "SELECT subscription_id FROM deliveries WHERE job_id = 'j1'")}
    assert received == {everything, wildcard}
    assert failed_only not in received and operations not in received


async def test_a_dead_job_delivery_emits_delivery_dead_and_a_dead_operational_one_does_not(database_url: str) -> None:
    broken = await _subscribe(database_url)
    operations = await _subscribe(database_url, ["operational.delivery_dead"])
    async with await _connect(database_url) as conn:
        await conn.execute(
            "SELECT receiver_apply_job_event('job-d', 'completed', 'poll', NULL, NULL, NULL,"
            " 'hedra', NULL, NULL, NULL, NULL, NULL, NULL)"
        )
        await outbox.fan_out(conn)
        claimed = await outbox.claim(
            conn, me="t", limit=10, lease=timedelta(seconds=30), brokers=[], cap=10, in_flight={}
        )
        assert [c.subscription_id for c in claimed] == [broken]
        job_event = claimed[0].event_id
        await outbox.complete(conn, "t", [outbox.Completion.of(claimed[0], "dead", 503, "HTTP 503")])

        rows = query(
            database_url,
            "SELECT id, subject, payload::text FROM outbox_events WHERE type = 'operational.delivery_dead'",
        )
        assert len(rows) == 1
        dead_event, subject, payload = rows[0]
        assert subject == f"subscriber:{broken}"
        assert orjson.loads(payload)["data"] == {
            "subscriber_id": broken,
            "kind": "http",
            "url": "http://127.0.0.1:9/hook",
            "event_id": str(job_event),
            "event_type": "job.completed",
            "job_id": "job-d",
            "attempts": 1,
            "last_status": 503,
            "last_error": "HTTP 503",
        }
        await outbox.fan_out(conn)
        assert _receivers(database_url, dead_event) == {operations}  # not to `broken`, which it is about

        # The operations subscriber fails too: its dead delivery of the operational event is the end.
        claimed = await outbox.claim(
            conn, me="t", limit=10, lease=timedelta(seconds=30), brokers=[], cap=10, in_flight={}
        )
        assert [c.event_id for c in claimed] == [dead_event]
        assert claimed[0].job_id == f"operational:subscriber:{broken}"
        await outbox.complete(conn, "t", [outbox.Completion.of(claimed[0], "dead", None, "refused")])
    assert scalar(database_url, "SELECT count(*) FROM outbox_events WHERE type LIKE 'operational.%%'") == 1


async def test_replaying_dead_operational_deliveries(database_url: str) -> None:
    operations = await _subscribe(database_url, ["operational.*"])
    async with await _connect(database_url) as conn:
        event = await operational.emit(conn, "operational.jobs_stale", {"count": 3})
        await outbox.fan_out(conn)
        await conn.execute("UPDATE deliveries SET state = 'dead', attempts = 11")
        assert await outbox.replay(conn, dead=True) == 1
    assert query(
        database_url, "SELECT subscription_id, job_id, state, attempts FROM deliveries WHERE event_id = %s", (event,)
    ) == [(operations, "operational:jobs", "pending", 0)]


async def test_unknown_types_and_missing_subjects_are_refused(database_url: str) -> None:
    async with await _connect(database_url) as conn:
        with pytest.raises(ValueError, match="subscriber_id"):
            await operational.emit(conn, "operational.subscriber_disabled", {"url": "http://x/"})
        with pytest.raises(ValueError, match="not an operational event type"):
            await operational.emit(conn, "operational.nope", {})  # type: ignore[arg-type]
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute("SELECT receiver_operational_event('operational.nope', 'jobs', '{}')")
        # A job event must keep its job and status: the (job_id, status) guard depends on them.
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute(
                "INSERT INTO outbox_events (type, payload, subject) VALUES ('job.completed', '{}', 'jobs')"
            )
        # Every type the code names is one the database takes.
        for event_type in operational.TYPES:
            data = {"subscriber_id": "s", "url": "u", "endpoint": "default", "count": 1}
            await operational.emit(conn, event_type, data)
    assert scalar(database_url, "SELECT count(DISTINCT type) FROM outbox_events") == len(operational.TYPES)


async def test_emit_once_emits_once_per_window_across_connections(database_url: str) -> None:
    data = {"endpoint": "default", "failures": 50}
    first, second = await _connect(database_url), await _connect(database_url)
    try:
        async with first.transaction():
            assert await operational.emit_once(
                first, "operational.endpoint_forged_signatures", data, window=timedelta(minutes=5)
            )

            async def racing() -> uuid.UUID | None:
                async with second.transaction():
                    return await operational.emit_once(
                        second, "operational.endpoint_forged_signatures", data, window=timedelta(minutes=5)
                    )

            waiting = asyncio.create_task(racing())
            await asyncio.sleep(0.3)
            assert not waiting.done()  # blocked on the mark's row lock
        assert await waiting is None  # and then saw the first one's mark
        # Another endpoint is another subject.
        async with first.transaction():
            assert await operational.emit_once(
                first, "operational.endpoint_forged_signatures", {"endpoint": "other"}, window=timedelta(minutes=5)
            )
        # Once the window has passed, again.
        await first.execute("UPDATE operational_marks SET emitted_at = now() - interval '6 minutes'")
        async with first.transaction():
            assert await operational.emit_once(
                first, "operational.endpoint_forged_signatures", data, window=timedelta(minutes=5)
            )
    finally:
        await first.close()
        await second.close()
    assert scalar(database_url, "SELECT count(*) FROM outbox_events WHERE subject = 'endpoint:default'") == 2


FORGED_SUM = "SELECT coalesce(sum(requests), 0) FROM webhook_outcomes WHERE outcome = 'unauthorized'"


async def test_forged_signature_counts_add_up_and_a_burst_emits_once(database_url: str) -> None:
    check = forgeries.check_flushed(Burst(20, timedelta(minutes=5)))
    now = datetime.now(UTC)

    def events() -> list[tuple[str, dict[str, Any]]]:
        rows = query(database_url, "SELECT subject, payload::text FROM outbox_events ORDER BY seq")
        return [(subject, orjson.loads(payload)["data"]) for subject, payload in rows]

    async with await _connect(database_url) as conn:
        # Other outcomes, however many, are no forgeries.
        await outcomes.flush(conn, {("default", "accepted"): 500, ("default", "bad_request"): 30}, now, check)
        await outcomes.flush(conn, {("default", "unauthorized"): 12, ("other", "unauthorized"): 3}, now, check)
        assert events() == []
        # A second server's counts for the same minute add to the first's: 20, a burst.
        await outcomes.flush(conn, {("default", "unauthorized"): 8}, now, check)
        await outcomes.flush(conn, {("default", "unauthorized"): 5}, now, check)  # same burst window
    assert query(
        database_url,
        "SELECT endpoint, sum(requests) FROM webhook_outcomes WHERE outcome = 'unauthorized'"
        " GROUP BY endpoint ORDER BY endpoint",
    ) == [("default", 25), ("other", 3)]
    burst = {"endpoint": "default", "failures": 20, "window": "5m", "threshold": 20}
    assert events() == [("endpoint:default", burst)]
    async with await _connect(database_url) as conn:
        # Failures older than the window do not count toward a burst.
        await conn.execute("UPDATE webhook_outcomes SET minute = minute - interval '10 minutes'")
        await conn.execute("UPDATE operational_marks SET emitted_at = emitted_at - interval '10 minutes'")
        await outcomes.flush(conn, {("default", "unauthorized"): 19}, now, check)
        # RECEIVER_FORGED_BURST=off: counted, never checked (20 in the window now).
        assert forgeries.check_flushed(None) is None
        await outcomes.flush(conn, {("default", "unauthorized"): 1}, now, None)
        # A flush without 401s checks nothing.
        await outcomes.flush(conn, {("default", "accepted"): 1}, now, check)
        assert events() == [("endpoint:default", burst)]
        await outcomes.flush(conn, {("default", "unauthorized"): 1}, now, check)
    assert events() == [("endpoint:default", burst), ("endpoint:default", {**burst, "failures": 21})]
    assert scalar(database_url, FORGED_SUM + " AND endpoint = 'default'") == 46


async def test_the_burst_and_per_hour_queries_read_through_the_primary_key(database_url: str) -> None:
    """A week of counts, one row per minute, endpoint and outcome: both queries range over the
    window's minutes in pk_webhook_outcomes, not the whole table."""
    async with await _connect(database_url) as conn:
        await conn.execute(
            "INSERT INTO webhook_outcomes (minute, endpoint, outcome, requests)"
            " SELECT date_trunc('minute', now()) - m * interval '1 minute', e, o, 1"
            " FROM generate_series(0, 7 * 1440) AS m, unnest(ARRAY['default', 'studio']) AS e,"
            " unnest(ARRAY['accepted', 'duplicate', 'unauthorized']) AS o"
        )
        await conn.execute("ANALYZE webhook_outcomes")
        plans = [
            await _plan(
                conn, forgeries.OVER, {"endpoints": ["default"], "window": timedelta(minutes=5), "threshold": 20}
            ),
            await _plan(conn, forgeries.PER_HOUR, {"since": datetime.now(UTC) - timedelta(hours=24)}),
        ]
        # And they read what they should.
        assert await forgeries.check(conn, ["default"], Burst(5, timedelta(minutes=5))) == ["default"]
        hours = await forgeries.per_hour(conn, datetime.now(UTC) - timedelta(hours=24))
    for plan in plans:
        scans = _scans(plan)
        assert [s["Relation Name"] for s in scans if "Relation Name" in s] == ["webhook_outcomes"], plan
        indexed = [s for s in scans if s.get("Index Name") == "pk_webhook_outcomes"]
        assert indexed and "minute" in indexed[0]["Index Cond"], plan
    assert set(hours) == {"default", "studio"} and 1440 <= sum(hours["default"].values()) <= 1441 + 60


async def _plan(conn: psycopg.AsyncConnection[Any], statement: str, params: dict[str, Any]) -> dict[str, Any]:
    row = await (await conn.execute("EXPLAIN (FORMAT JSON) " + statement, params)).fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def _scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node] if "Scan" in node["Node Type"] else []
    for child in node.get("Plans", []):
        found += _scans(child)
    return found


async def test_unresolved_jobs_are_reported_once_per_occasion(database_url: str) -> None:
    async with await _connect(database_url) as conn:
        await conn.execute(
            "INSERT INTO jobs (id, status, updated_at, last_polled_at) VALUES"
            " ('stuck-1', 'processing', now() - interval '3 hours', now()),"
            " ('stuck-2', 'submitted', now() - interval '2 hours', now()),"
            " ('never-polled', 'processing', now() - interval '5 hours', NULL),"
            " ('recent', 'processing', now() - interval '10 minutes', now()),"
            " ('done', 'completed', now() - interval '9 hours', now())"
        )
        first = await operational.report_unresolved_jobs(conn, after=timedelta(hours=1))
        assert first is not None
        assert await operational.report_unresolved_jobs(conn, after=timedelta(hours=1)) is None  # same jobs
        data = orjson.loads(scalar(database_url, "SELECT payload::text FROM outbox_events WHERE id = %s", (first,)))[
            "data"
        ]
        assert data["count"] == 2 and data["oldest_job_ids"] == ["stuck-1", "stuck-2"]
        assert data["unresolved_after"] == 3600
        # A newer job joins them, but within the hour of the last event: not yet.
        await conn.execute("UPDATE jobs SET updated_at = now() - interval '90 minutes' WHERE id = 'recent'")
        assert await operational.report_unresolved_jobs(conn, after=timedelta(hours=1)) is None
        await conn.execute("UPDATE operational_marks SET emitted_at = now() - interval '61 minutes'")
        second = await operational.report_unresolved_jobs(conn, after=timedelta(hours=1))
        assert second is not None
        # The hour passes again with no newer job: nothing new to say.
        await conn.execute("UPDATE operational_marks SET emitted_at = now() - interval '61 minutes'")
        assert await operational.report_unresolved_jobs(conn, after=timedelta(hours=1)) is None
        await conn.execute("UPDATE jobs SET status = 'completed' WHERE id LIKE 'stuck-%%' OR id = 'recent'")
        assert await operational.report_unresolved_jobs(conn, after=timedelta(hours=1)) is None


# The fan-out of revision 0005 to 0009's code, as it was: copies outbox_events.job_id into
# deliveries and matches on event_types alone. It keeps running during a rolling deploy.
FAN_OUT_BEFORE_0010 = """
WITH o AS (
    SELECT o.id, o.job_id, o.seq, o.type, o.created_at, o.payload -> 'data' ->> 'service' AS service
    FROM outbox_events o WHERE o.dispatched_at IS NULL ORDER BY o.seq FOR UPDATE OF o SKIP LOCKED
), fanned AS (
    INSERT INTO deliveries (event_id, subscription_id, job_id, event_seq)
    SELECT o.id, s.id, o.job_id, o.seq
    FROM o
    JOIN subscriptions s ON s.created_at <= o.created_at
      AND (s.event_types IS NULL OR o.type = ANY(s.event_types))
      AND (s.services IS NULL OR o.service = ANY(s.services))
    ON CONFLICT (event_id, subscription_id) DO NOTHING
    RETURNING 1
)
UPDATE outbox_events SET dispatched_at = now() WHERE id = ANY(ARRAY(SELECT o.id FROM o))
RETURNING (SELECT count(*) FROM fanned)
"""


async def test_the_fan_out_of_the_release_before_routes_operational_events_as_this_one_does(
    database_url: str,
) -> None:
    """Without the trigger, the old statement fails on the NULL job_id (the whole batch, for as long
    as an old publisher runs) or delivers operational events to every subscriber without a filter.
    It does not know `operational.*`: such a subscription misses what an old publisher fans out
    (the README says so under "Upgrading")."""
    everything = await _subscribe(database_url)
    operations = await _subscribe(database_url, ["operational.jobs_stale"])
    about_itself = await _subscribe(database_url, ["operational.circuit_opened"])
    async with await _connect(database_url) as conn:
        await conn.execute(
            "SELECT receiver_apply_job_event('job-old', 'completed', 'poll', NULL, NULL, NULL,"
            " 'hedra', NULL, NULL, NULL, NULL, NULL, NULL)"
        )
        stale = await operational.emit(conn, "operational.jobs_stale", {"count": 1})
        opened = await operational.emit(conn, "operational.circuit_opened", {"subscriber_id": about_itself})
        await conn.execute(FAN_OUT_BEFORE_0010)
    assert query(database_url, "SELECT subscription_id, job_id FROM deliveries WHERE event_id = %s", (stale,)) == [
        (operations, "operational:jobs")
    ]
    assert _receivers(database_url, opened) == set()
    job_receivers = query(database_url, "SELECT subscription_id FROM deliveries WHERE job_id = 'job-old'")
    assert {row[0] for row in job_receivers} == {everything}


async def test_bad_signatures_through_the_server_are_counted_in_batches_and_a_burst_emits_once(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcomes, "FLUSH_INTERVAL", 0.1)
    settings = settings_for(database_url, tmp_path, forged_burst=Burst(5, timedelta(minutes=1)))
    async with running(settings) as receiver:
        answers = await asyncio.gather(
            *(receiver.post(doitong_body(f"forged-{i}"), secret="not-the-secret") for i in range(8))
        )
        assert [a.status_code for a in answers] == [401] * 8

        async def counted() -> bool:
            return scalar(database_url, FORGED_SUM) == 8

        assert await eventually(counted)
        assert (await receiver.post(doitong_body("forged-9"), secret="not-the-secret")).status_code == 401

        async def counted_again() -> bool:
            return scalar(database_url, FORGED_SUM) == 9

        assert await eventually(counted_again)
    rows = query(database_url, "SELECT subject, payload::text FROM outbox_events")
    assert len(rows) == 1  # one event for the burst, however many flushes saw it over the threshold
    assert rows[0][0] == "endpoint:default"
    data = orjson.loads(rows[0][1])["data"]
    assert data["endpoint"] == "default" and data["failures"] >= 5 and data["window"] == "1m"
    assert scalar(database_url, "SELECT count(*) FROM inbound_webhooks") == 0  # nothing else stored


async def test_what_was_counted_since_the_last_flush_is_written_at_shutdown(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcomes, "FLUSH_INTERVAL", 3600.0)
    async with running(settings_for(database_url, tmp_path)) as receiver:
        for i in range(3):
            assert (await receiver.post(doitong_body(f"late-{i}"), secret="not-the-secret")).status_code == 401
        assert scalar(database_url, "SELECT count(*) FROM webhook_outcomes") == 0  # no write per request
    assert query(database_url, "SELECT endpoint, outcome, requests FROM webhook_outcomes") == [
        ("default", "unauthorized", 3)
    ]


async def test_emit_works_in_a_sqlalchemy_transaction_too(database_url: str) -> None:
    operations = await _subscribe(database_url, ["operational.subscriber_disabled"])
    event = await admin(
        database_url,
        lambda conn: operational.emit(
            conn, "operational.subscriber_disabled", {"subscriber_id": "sub_x", "url": "http://x/", "reason": "test"}
        ),
    )
    async with await _connect(database_url) as conn:
        await outbox.fan_out(conn)
    assert _receivers(database_url, event) == {operations}


async def test_a_subscriber_gone_is_announced_once_with_the_change_that_disabled_it(database_url: str) -> None:
    gone = await _subscribe(database_url)
    operations = await _subscribe(database_url, ["operational.subscriber_disabled"])
    async with await _connect(database_url) as conn:
        assert await outbox.disable_gone(conn, gone, "410 Gone at 2026-11-30T12:00:00+00:00")
        assert not await outbox.disable_gone(conn, gone, "410 Gone again")  # another publisher's 410: no event
        with pytest.raises(RuntimeError):  # the caller's transaction rolls back: neither stays
            async with conn.transaction():
                assert await outbox.disable_gone(conn, operations, "410 Gone")
                raise RuntimeError
        await outbox.fan_out(conn)
    assert query(database_url, "SELECT id, state FROM subscriptions ORDER BY state") == [
        (gone, "disabled"),
        (operations, "enabled"),
    ]
    [(event, payload)] = query(
        database_url, "SELECT id, payload::text FROM outbox_events WHERE type = 'operational.subscriber_disabled'"
    )
    assert orjson.loads(payload)["data"] == {
        "subscriber_id": gone,
        "url": "http://127.0.0.1:9/hook",
        "reason": "410 Gone at 2026-11-30T12:00:00+00:00",
    }
    assert _receivers(database_url, event) == {operations}


async def test_the_watch_emits_and_sets_the_gauges(database_url: str) -> None:
    async with await _connect(database_url) as conn:
        await conn.execute(
            "INSERT INTO jobs (id, status, updated_at, last_polled_at)"
            " VALUES ('stuck', 'processing', now() - interval '2 hours', now())"
        )
    pool = db.create_pool(database_url, size=1, timeout=timedelta(seconds=2))
    await pool.open()
    stop = asyncio.Event()
    watching = asyncio.create_task(
        operational.watch_unresolved_jobs(pool, after=timedelta(hours=1), interval=timedelta(minutes=1), stop=stop)
    )
    try:

        async def reported() -> bool:
            return scalar(database_url, "SELECT count(*) FROM outbox_events WHERE type = 'operational.jobs_stale'") == 1

        assert await eventually(reported)
    finally:
        stop.set()
        await watching
        await pool.close()
    assert REGISTRY.get_sample_value("receiver_jobs_unresolved") == 1
    assert 7000 < (REGISTRY.get_sample_value("receiver_jobs_unresolved_oldest_seconds") or 0) < 7300
