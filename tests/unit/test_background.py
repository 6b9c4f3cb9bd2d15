"""Background tasks: named, restarted with back-off or stopping their owner, awaited on stop."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from receiver.core import background

LOG = logging.getLogger("tests.background")


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(background, "MAX_BACKOFF", 0.04)


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOG.name and r.levelno >= logging.ERROR]


async def test_each_failure_of_a_restartable_task_is_logged_once_and_it_starts_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    tasks = background.BackgroundTasks(LOG, stop)
    runs: list[str | None] = []

    async def flaky() -> None:
        current = asyncio.current_task()
        runs.append(current.get_name() if current else None)
        if len(runs) <= 4:
            raise RuntimeError(f"failure {len(runs)}")
        await stop.wait()

    tasks.start("flaky", flaky, on_failure="restart")
    for _ in range(200):
        if len(runs) == 5:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await tasks.stop()
    tasks.raise_failure()  # nothing that stops the owner failed
    assert runs == ["flaky"] * 5
    messages = [r.getMessage() for r in _errors(caplog)]
    assert messages == [
        "background task flaky failed; starting it again in 0.0s",
        "background task flaky failed; starting it again in 0.0s",
        "background task flaky failed; starting it again in 0.0s",
        "background task flaky failed; starting it again in 0.0s",
    ]
    assert [str(r.exc_info[1]) for r in _errors(caplog) if r.exc_info] == [f"failure {i}" for i in range(1, 5)]


async def test_back_off_doubles_up_to_its_cap() -> None:
    stop = asyncio.Event()
    tasks = background.BackgroundTasks(LOG, stop)
    started: list[float] = []
    loop = asyncio.get_running_loop()

    async def failing() -> None:
        started.append(loop.time())
        raise RuntimeError("again")

    tasks.start("failing", failing, on_failure="restart")
    while len(started) < 5:
        await asyncio.sleep(0.005)
    await tasks.stop()
    gaps = [b - a for a, b in itertools.pairwise(started[:5])]
    for gap, wanted in zip(gaps, (0.01, 0.02, 0.04, 0.04), strict=True):
        assert wanted <= gap < wanted + 0.05, gaps


async def test_a_task_that_must_not_fail_stops_its_owner(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    tasks = background.BackgroundTasks(LOG, stop)
    other_cancelled = asyncio.Event()

    async def broken() -> None:
        raise ValueError("bug")

    async def other() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            other_cancelled.set()

    tasks.start("other", other, on_failure="restart")
    tasks.start("broken", broken, on_failure="stop")
    await asyncio.wait_for(stop.wait(), 5)
    await tasks.stop()
    assert other_cancelled.is_set()  # cancelled and awaited
    with pytest.raises(background.TaskFailed, match="broken failed"):
        tasks.raise_failure()
    assert [r.getMessage() for r in _errors(caplog)] == ["background task broken failed; stopping"]


async def test_a_task_that_returns_before_stop_has_failed(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    tasks = background.BackgroundTasks(LOG, stop)

    async def quits() -> None:
        return None

    tasks.start("quits", quits, on_failure="stop")
    await asyncio.wait_for(stop.wait(), 5)
    await tasks.stop()
    with pytest.raises(background.TaskFailed, match="returned while its owner was running"):
        tasks.raise_failure()


async def test_stop_gives_tasks_their_grace_before_cancelling() -> None:
    stop = asyncio.Event()
    tasks = background.BackgroundTasks(LOG, stop)
    ended_cleanly = asyncio.Event()

    async def winds_down() -> None:
        await stop.wait()
        await asyncio.sleep(0.05)  # e.g. a server closing its connections
        ended_cleanly.set()

    tasks.start("winds-down", winds_down, on_failure="stop")
    await asyncio.sleep(0)
    stop.set()
    await tasks.stop(grace=5)
    assert ended_cleanly.is_set()
    tasks.raise_failure()
