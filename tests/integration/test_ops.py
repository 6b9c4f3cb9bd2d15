"""Health, readiness, metrics and the SQL views people query."""

from __future__ import annotations

from datetime import UTC, date
from pathlib import Path

from receiver.core import migrate
from tests.support import Receiver, doitong_body, execute, metric, query, running, scalar, settings_for


async def test_healthz_and_readyz(receiver: Receiver) -> None:
    assert (await receiver.client.get(receiver.url + "/healthz")).json() == {"status": "ok"}
    ready = await receiver.client.get(receiver.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_readyz_is_503_while_the_schema_is_behind(empty_database_url: str, tmp_path: Path) -> None:
    async with running(settings_for(empty_database_url, tmp_path)) as receiver:
        ready = await receiver.client.get(receiver.url + "/readyz")
        assert ready.status_code == 503
        assert "receiver migrate" in ready.json()["reason"]
        # Webhooks cannot be stored either: 503, so the provider retries.
        response = await receiver.post(doitong_body("job-no-schema"))
        assert response.status_code == 503


async def test_readyz_is_503_while_the_schema_is_one_revision_behind(empty_database_url: str, tmp_path: Path) -> None:
    head = migrate.head_revision()
    migrate.upgrade(empty_database_url, "head")
    migrate.downgrade(empty_database_url, "-1")
    async with running(settings_for(empty_database_url, tmp_path)) as receiver:
        ready = await receiver.client.get(receiver.url + "/readyz")
        assert ready.status_code == 503
        assert f"expected {head}" in ready.json()["reason"]
        migrate.upgrade(empty_database_url, "head")
        ready = await receiver.client.get(receiver.url + "/readyz")
        assert ready.status_code == 200 and ready.json()["revision"] == head


async def test_metrics_count_outcomes_latency_and_backlog(receiver: Receiver) -> None:
    webhooks = "receiver_webhooks_total"
    default = {"endpoint": "default"}
    before = {
        outcome: await metric(receiver, webhooks, outcome=outcome, **default)
        for outcome in ("accepted", "duplicate", "unauthorized")
    }
    unknown_before = await metric(receiver, webhooks, endpoint="(unknown)", outcome="not_found")
    latency_before = await metric(receiver, "receiver_webhook_duration_seconds_count")
    replays_before = await metric(receiver, "receiver_webhook_replays_total", **default)
    created_before = await metric(receiver, "receiver_outbox_events_created_total", type="job.processing")

    await receiver.post(doitong_body("job-m1", "processing"))
    await receiver.post(doitong_body("job-m1", "processing"))
    await receiver.post(doitong_body("job-m2"), secret="wrong-secret-1")
    await receiver.post(b"{}", path="/webhooks/doitong/absent")

    for outcome in ("accepted", "duplicate", "unauthorized"):
        assert await metric(receiver, webhooks, outcome=outcome, **default) == before[outcome] + 1, outcome
    # Unknown endpoint names never become label values.
    assert await metric(receiver, webhooks, endpoint="(unknown)", outcome="not_found") == unknown_before + 1
    text = (await receiver.client.get(receiver.url + "/metrics")).text
    assert "absent" not in text
    assert await metric(receiver, "receiver_webhook_duration_seconds_count") == latency_before + 4
    assert await metric(receiver, "receiver_webhook_replays_total", **default) == replays_before + 1
    assert await metric(receiver, "receiver_outbox_events_created_total", type="job.processing") == created_before + 1
    assert await metric(receiver, "receiver_outbox_backlog") == 1.0
    assert await metric(receiver, "receiver_database_up") == 1.0


async def test_views_answer_the_operator_questions(receiver: Receiver) -> None:
    await receiver.post(doitong_body("job-v1", "processing", createdAt="2024-03-01T10:00:00Z", completedAt=None))
    await receiver.post(
        doitong_body("job-v1", "completed", createdAt="2024-03-01T10:00:00Z", completedAt="2024-03-01T10:01:30Z")
    )
    await receiver.post(
        doitong_body("job-v2", "failed", createdAt="2024-03-01T23:59:00Z", completedAt="2024-03-02T00:00:00Z")
    )
    await receiver.post(doitong_body("job-v3", "processing", createdAt="2024-03-02T00:00:01+01:00"))
    url = receiver.settings.database_url
    assert url is not None

    latency = query(url, "SELECT job_id, status, provider_seconds FROM job_latency ORDER BY job_id")
    assert latency == [("job-v1", "completed", 90.0), ("job-v2", "failed", 60.0)]
    delays = query(url, "SELECT receive_delay_seconds > 0 FROM job_latency")
    assert delays == [(True,), (True,)]

    usage = query(url, "SELECT day, service, status, jobs, credits FROM daily_usage ORDER BY day, status")
    assert usage == [
        (date(2024, 3, 1), "hedra", "completed", 1, 0),
        (date(2024, 3, 1), "hedra", "failed", 1, 0),
        # 00:00:01+01:00 is still March 1st in UTC.
        (date(2024, 3, 1), "hedra", "processing", 1, 0),
    ]

    history = query(
        url,
        "SELECT status, previous_status, applied, event_type FROM job_history"
        " WHERE job_id = 'job-v1' ORDER BY event_seq",
    )
    assert history == [
        ("processing", None, True, "job.processing"),
        ("completed", "processing", True, "job.completed"),
    ]


async def test_daily_usage_counts_credits_and_falls_back_to_first_seen(receiver: Receiver) -> None:
    url = receiver.settings.database_url
    assert url is not None
    # Registered through us with a credit cost, then reported by webhooks.
    execute(url, "SELECT receiver_register_job('job-c1', 'hedra', 'avatar', NULL, NULL, 7, NULL)")
    execute(url, "SELECT receiver_register_job('job-c2', 'hedra', 'avatar', NULL, NULL, 5, NULL)")
    for job in ("job-c1", "job-c2"):
        await receiver.post(doitong_body(job, "completed", createdAt="2024-05-01T12:00:00Z"))
    # No createdAt at all: the day we first saw it, in UTC.
    await receiver.post(doitong_body("job-c3", "completed", createdAt=None))
    first_seen = scalar(url, "SELECT first_seen_at FROM jobs WHERE id = 'job-c3'")

    usage = query(url, "SELECT day, service, status, jobs, credits FROM daily_usage ORDER BY day")
    assert usage == [
        (date(2024, 5, 1), "hedra", "completed", 2, 12),
        (first_seen.astimezone(UTC).date(), "hedra", "completed", 1, 0),
    ]
