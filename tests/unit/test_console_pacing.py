"""The console process serves one request at a time and is busy at most a quarter of the time."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

from receiver.console.process import Paced


async def test_requests_run_one_at_a_time_and_a_quarter_of_the_time_at_most() -> None:
    spans: list[tuple[float, float]] = []
    running = 0

    async def page(scope: Any, receive: Any, send: Any) -> None:
        nonlocal running
        running += 1
        assert running == 1, "two console requests at once"
        started = time.perf_counter()
        await asyncio.sleep(0.02)
        spans.append((started, time.perf_counter()))
        running -= 1

    paced = Paced(page)
    started = time.perf_counter()
    await asyncio.gather(*(paced({"type": "http"}, None, None) for _ in range(5)))
    elapsed = time.perf_counter() - started
    busy = sum(end - start for start, end in spans)
    assert len(spans) == 5
    # Busy a quarter of the time, counting the pause the last one leaves behind it.
    assert busy / (elapsed + 3 * (spans[-1][1] - spans[-1][0])) <= Paced.SHARE + 0.02
    # Each waited three times as long as the one before it took.
    for (_, previous_end), (start, _) in itertools.pairwise(spans):
        assert start - previous_end >= 0.055


async def test_a_failed_request_still_counts_and_lifespan_is_not_paced() -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        if scope["type"] == "http":
            await asyncio.sleep(0.02)
            raise RuntimeError("the page failed")

    paced = Paced(app)
    with contextlib.suppress(RuntimeError):
        await paced({"type": "http"}, None, None)
    started = time.perf_counter()
    await paced({"type": "lifespan"}, None, None)
    assert time.perf_counter() - started < 0.01
    with contextlib.suppress(RuntimeError):
        await paced({"type": "http"}, None, None)
    assert time.perf_counter() - started >= 0.055
    assert calls == ["http", "lifespan", "http"]


async def test_the_pause_is_capped_and_static_files_are_not_paced() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.5 if scope["path"] == "/slow" else 0.001)

    paced = Paced(app, skip="/console/static/")
    await paced({"type": "http", "path": "/slow"}, None, None)
    started = time.perf_counter()
    await paced({"type": "http", "path": "/console/static/console.css"}, None, None)
    assert time.perf_counter() - started < 0.1  # not behind the 1 s pause
    await paced({"type": "http", "path": "/next"}, None, None)
    # 3 x 0.5 s would be 1.5 s; the pause is capped at MAX_PAUSE.
    assert Paced.MAX_PAUSE - 0.1 <= time.perf_counter() - started <= Paced.MAX_PAUSE + 0.3
