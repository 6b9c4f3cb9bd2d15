"""The outbox SQL under concurrency: what keeps a job's events in order."""

from __future__ import annotations

from pathlib import Path

import psycopg

from receiver import outbox, subscriptions
from tests.support import MASTER_KEY, admin, doitong_body, running, scalar, settings_for


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
        assert await outbox.fan_out(first, limit=2) == 2  # queued, processing: not committed yet
        # Without the gate this takes rendering and completed, and committing them first would
        # let `completed` be claimed before `queued` has a delivery row at all.
        assert await outbox.fan_out(second, limit=10) == 0
        await first.commit()
        assert await outbox.fan_out(second, limit=10) == 2
    finally:
        await first.close()
        await second.close()
    seqs = [scalar(database_url, "SELECT array_agg(event_seq ORDER BY id) FROM deliveries WHERE job_id = 'job-fan'")]
    assert seqs[0] == sorted(seqs[0])
