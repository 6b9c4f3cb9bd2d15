"""Submitting through Doitong's API (the simulator stands in for it) and reconciling missed webhooks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import stamina

from receiver.core.config import Settings
from receiver.core.errors import ConfigError
from receiver.inbound import signatures
from receiver.jobs import doitong, reconcile, submit
from receiver.simulator import Account, SimulatorConfig
from receiver.simulator import running as simulating
from tests.support import SECRET, Receiver, eventually, query, running, scalar, settings_for

TEXT = "Hello, welcome to our platform!"


@pytest.fixture
async def receiver_up(database_url: str, tmp_path: Path) -> AsyncIterator[Receiver]:
    async with running(settings_for(database_url, tmp_path)) as server:
        yield server


def _settings(receiver: Receiver, api_url: str, key: str = "sk_test") -> Settings:
    return receiver.settings.replace(public_url=receiver.url, doitong_api_url=api_url, doitong_api_key=key)


async def test_submit_registers_the_job_and_its_webhooks_complete_it(receiver_up: Receiver) -> None:
    config = SimulatorConfig(accounts=(Account("sk_test"),), webhook_secret=SECRET, latency=0.2, retry_base=0.05)
    async with simulating(config) as (_simulator, api_url):
        settings = _settings(receiver_up, api_url)
        job = await submit.submit(
            settings, text=TEXT, avatar="professional-1", voice="en-US-neural", client_reference="order-1"
        )
        url = settings.database_url or ""
        assert job.webhook_url == receiver_up.url + "/webhooks/doitong"
        assert scalar(url, "SELECT registered FROM jobs WHERE id = %s", (job.id,)) is True
        assert scalar(url, "SELECT credit_cost FROM jobs WHERE id = %s", (job.id,)) == job.credit_cost
        assert job.credit_cost is not None and 50 <= job.credit_cost <= 100

        async def completed() -> bool:
            return scalar(url, "SELECT status FROM jobs WHERE id = %s", (job.id,)) == "completed"

        assert await eventually(completed)
    events = query(url, "SELECT type, payload -> 'data' ->> 'client_reference' FROM outbox_events ORDER BY seq")
    assert events == [("job.processing", "order-1"), ("job.completed", "order-1")]


async def test_every_documented_error_becomes_a_clear_exception(receiver_up: Receiver) -> None:
    accounts = (Account("sk_rich"), Account("sk_poor", credits=60), Account("sk_free", plan="free"))
    config = SimulatorConfig(accounts=accounts, webhook_secret=SECRET, latency=0.1)
    async with simulating(config) as (_simulator, api_url):
        with pytest.raises(doitong.Unauthorized, match="DOITONG_API_KEY"):
            await submit.submit(_settings(receiver_up, api_url, "sk_wrong"), text=TEXT, avatar="a")

        with pytest.raises(doitong.InsufficientCredits) as poor:
            await submit.submit(_settings(receiver_up, api_url, "sk_poor"), text="x" * 600, avatar="a")
        assert poor.value.available == 60 and poor.value.required is not None and poor.value.required > 60
        assert "required" in str(poor.value) and "available" in str(poor.value)

        with pytest.raises(doitong.ProviderError) as bad:
            await submit.submit(_settings(receiver_up, api_url, "sk_rich"), text="x" * 5000, avatar="a")
        assert bad.value.status == 400

        impatient = doitong.DoitongClient(api_url, "sk_free", max_rate_wait=0)
        try:
            with pytest.raises(doitong.RateLimited) as limited:
                for _ in range(11):  # the free plan allows 10 a minute (and one job at a time)
                    await impatient.avatar("nope")
            assert limited.value.reset_at is not None
        finally:
            await impatient.close()
    assert scalar(receiver_up.settings.database_url or "", "SELECT count(*) FROM jobs") == 0  # nothing recorded


async def test_server_errors_are_retried_with_back_off_then_reported(receiver_up: Receiver) -> None:
    config = SimulatorConfig(accounts=(Account("sk_test"),), webhook_secret=SECRET, fail_rate=1.0)
    waits: list[float] = []

    def record(details: stamina.instrumentation.RetryDetails) -> None:  # stamina calls it before each wait
        if isinstance(details.caused_by, doitong.TryAgain):
            waits.append(details.wait_for)

    async with simulating(config) as (_simulator, api_url):
        api = doitong.DoitongClient(api_url, "sk_test", retries=3, backoff=0.05)
        stamina.instrumentation.set_on_retry_hooks([record])
        started = time.monotonic()
        try:
            with pytest.raises(doitong.Unavailable, match="4 attempts"):
                await submit.submit(_settings(receiver_up, api_url), text=TEXT, avatar="a", doitong=api)
        finally:
            stamina.instrumentation.set_on_retry_hooks(None)
            await api.close()
        elapsed = time.monotonic() - started
    assert waits == pytest.approx([0.05, 0.1, 0.2])  # doubling from `backoff`, no jitter
    assert elapsed >= 0.35  # and waited for


async def test_missing_settings_are_config_errors(receiver_up: Receiver) -> None:
    with pytest.raises(ConfigError, match="RECEIVER_PUBLIC_URL"):
        await submit.submit(receiver_up.settings, text=TEXT, avatar="a")
    with pytest.raises(ConfigError, match="DOITONG_API_KEY"):
        await submit.submit(receiver_up.settings.replace(public_url="http://x"), text=TEXT, avatar="a")


async def test_reconciliation_finds_a_dropped_webhook_and_the_late_one_adds_nothing(receiver_up: Receiver) -> None:
    config = SimulatorConfig(
        accounts=(Account("sk_test"),), webhook_secret=SECRET, latency=0.2, drop_rate=1.0, retry_base=0.05
    )
    url = receiver_up.settings.database_url or ""
    async with simulating(config) as (simulator, api_url):
        settings = _settings(receiver_up, api_url)
        job = await submit.submit(settings, text=TEXT, avatar="professional-1")

        async def processing() -> bool:
            return scalar(url, "SELECT status FROM jobs WHERE id = %s", (job.id,)) == "processing"

        assert await eventually(processing)
        assert await simulator.wait_idle(5)
        await asyncio.sleep(0.3)
        assert scalar(url, "SELECT status FROM jobs WHERE id = %s", (job.id,)) == "processing"  # never told

        async with doitong.DoitongClient(api_url, "sk_test") as api:
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            try:
                early = await reconcile.reconcile_once(conn, api, stale_after=timedelta(hours=1))
                assert early.checked == 0  # not stale yet
                found = await reconcile.reconcile_once(conn, api, stale_after=timedelta(0))
                again = await reconcile.reconcile_once(conn, api, stale_after=timedelta(0))
            finally:
                await conn.close()
        assert (found.checked, found.changed, found.events) == (1, 1, 1)
        assert again.checked == 0  # finished jobs are not asked about again

    assert scalar(url, "SELECT status FROM jobs WHERE id = %s", (job.id,)) == "completed"
    history = query(url, "SELECT source, status, applied FROM job_events WHERE job_id = %s ORDER BY id", (job.id,))
    assert history[-1] == ("poll", "completed", True)

    # The webhook Doitong dropped turns up after all: history, but no second event.
    late = (
        '{"id":"' + job.id + '","status":"completed","url":"https://cdn.doitong.com/outputs/' + job.id + '.mp4",'
        '"service":"hedra","createdAt":"2024-01-01T00:00:00Z","completedAt":"2024-01-01T00:01:00Z",'
        '"metadata":{"duration":2.07,"width":1280,"height":720}}'
    ).encode()
    answer = await receiver_up.client.post(
        receiver_up.url + "/webhooks/doitong",
        content=late,
        headers={signatures.HEADER: signatures.sign(SECRET, late)},
    )
    assert answer.json() == {"status": "accepted", "job_id": job.id, "event_id": None}
    assert query(url, "SELECT type FROM outbox_events WHERE job_id = %s ORDER BY seq", (job.id,)) == [
        ("job.processing",),
        ("job.completed",),
    ]
