"""The Doitong client's retries: a 429 waits for the delay Doitong names (stamina's hook), a real HTTP server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
import stamina

from receiver.jobs import doitong
from tests.subscriber import Subscriber


@pytest.fixture
async def api() -> AsyncIterator[Subscriber]:
    """Answers 404 (a job Doitong does not know) unless scripted otherwise."""
    server = await Subscriber(default=404).start()
    yield server
    await server.stop()


@pytest.fixture
def waits() -> Iterator[list[float]]:
    """The waits stamina scheduled for the Doitong client, in order."""
    recorded: list[float] = []

    def record(details: stamina.instrumentation.RetryDetails) -> None:
        if isinstance(details.caused_by, doitong.TryAgain):
            recorded.append(details.wait_for)

    stamina.instrumentation.set_on_retry_hooks([record])
    try:
        yield recorded
    finally:
        stamina.instrumentation.set_on_retry_hooks(None)


@pytest.mark.parametrize("header", ["x-ratelimit-reset", "retry-after"])
async def test_a_429_waits_until_the_window_resets_then_tries_again(
    api: Subscriber, waits: list[float], header: str
) -> None:
    # X-RateLimit-Reset is a Unix time; Retry-After whole seconds from now.
    value = f"{time.time() + 0.4:.3f}" if header == "x-ratelimit-reset" else "1"
    expected = 0.45 if header == "x-ratelimit-reset" else 1.05  # the window, and a little more
    api.script["/graphql"] = [(429, {header: value})]
    async with doitong.DoitongClient(f"http://127.0.0.1:{api.port}", "sk_test", backoff=30.0) as client:
        started = time.monotonic()
        assert await client.avatar("job_unknown") is None  # the second attempt's 404
        elapsed = time.monotonic() - started
    assert [r.status for r in api.received] == [429, 404]
    assert len(waits) == 1 and expected - 0.1 <= waits[0] <= expected  # Doitong's delay, not the 30 s back-off
    assert elapsed >= waits[0]


async def test_a_429_that_resets_too_late_is_reported_at_once(api: Subscriber, waits: list[float]) -> None:
    reset_at = time.time() + 120
    api.script["/graphql"] = [(429, {"x-ratelimit-reset": str(reset_at)})]
    async with doitong.DoitongClient(f"http://127.0.0.1:{api.port}", "sk_test", max_rate_wait=60) as client:
        with pytest.raises(doitong.RateLimited) as limited:
            await client.avatar("job_unknown")
    assert limited.value.reset_at == pytest.approx(reset_at)
    assert len(api.received) == 1 and waits == []


async def test_no_answer_is_retried_then_reported(waits: list[float]) -> None:
    async with doitong.DoitongClient("http://127.0.0.1:9", "sk_test", retries=2, backoff=0.01) as client:
        with pytest.raises(doitong.Unavailable, match="did not answer"):
            await client.avatar("job_unknown")
    assert waits == pytest.approx([0.01, 0.02])
