"""Background tasks that are named, watched and awaited: none of them stops silently.

After procrastinate's worker (`_start_side_tasks`, `_monitor_side_tasks`, and
`utils.cancel_and_capture_errors` on shutdown): each task has a name; when one
ends with an exception, the exception is logged once, with the task's name and
traceback, and the task is either started again after a back-off (a loop that
can recover) or stops its owner (`stop` is set, and `raise_failure()` raises
`TaskFailed`, which the command line turns into exit code 1). Its owner decides
which, per task. On stop, every task is cancelled and awaited.

A task that returns before `stop` is set counts as failed too: a loop that
quietly returns has stopped as surely as one that raised.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from receiver.core.errors import ReceiverError

OnFailure = Literal["restart", "stop"]

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# A task that ran this long before it failed starts again after the first back-off, not a longer one.
HEALTHY_AFTER = 60.0


class TaskFailed(ReceiverError):
    """A background task its owner cannot do without failed; the owner stopped."""


class _Returned(Exception):
    """Stands for the missing exception of a task that returned before stop."""


@dataclass(slots=True)
class _Spec:
    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    on_failure: OnFailure
    backoff: float
    started_at: float = 0.0


class BackgroundTasks:
    """The background tasks of one owner (the publisher), all started, watched and stopped here."""

    def __init__(self, log: logging.Logger, stop: asyncio.Event) -> None:
        self._log = log
        self._stop = stop
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self.failure: TaskFailed | None = None

    def start(self, name: str, run: Callable[[], Coroutine[Any, Any, None]], *, on_failure: OnFailure) -> None:
        """Run `run()` as the task `name` until `stop()`. `on_failure` says what a failure does:
        "restart" starts `run()` again after a back-off (0.5 s, doubling up to 30 s);
        "stop" sets the owner's stop event and makes `raise_failure()` raise."""
        if name in self._tasks:
            raise ValueError(f"a background task named {name} is running already")
        self._spawn(_Spec(name, run, on_failure, FIRST_BACKOFF), delay=0.0)

    def _spawn(self, spec: _Spec, delay: float) -> None:
        task = asyncio.create_task(self._body(spec, delay), name=spec.name)
        self._tasks[spec.name] = task
        task.add_done_callback(functools.partial(self._done, spec))

    async def _body(self, spec: _Spec, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        spec.started_at = asyncio.get_running_loop().time()
        await spec.run()

    def _done(self, spec: _Spec, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            if self._stopping or self._stop.is_set():
                return
            exc = _Returned(f"{spec.name} returned while its owner was running")
        if self._stopping or self._stop.is_set():
            # Already stopping: nothing to restart, but the failure is still news.
            self._log.error("background task %s failed while stopping", spec.name, exc_info=exc)
            return
        if spec.on_failure == "stop":
            self._log.error("background task %s failed; stopping", spec.name, exc_info=exc)
            self.failure = TaskFailed(f"background task {spec.name} failed ({_describe(exc)}); stopped")
            self._stop.set()
            return
        if asyncio.get_running_loop().time() - spec.started_at >= HEALTHY_AFTER:
            spec.backoff = FIRST_BACKOFF
        delay, spec.backoff = spec.backoff, min(spec.backoff * 2, MAX_BACKOFF)
        self._log.error("background task %s failed; starting it again in %.1fs", spec.name, delay, exc_info=exc)
        self._spawn(spec, delay)

    async def stop(self, *, grace: float = 0.0) -> None:
        """Give the tasks `grace` seconds to end by themselves (those that watch the stop
        event), then cancel the rest and wait until each has ended. A failure while ending is
        logged by `_done`."""
        self._stopping = True
        tasks = list(self._tasks.values())
        if grace > 0 and tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def raise_failure(self) -> None:
        """Raise `TaskFailed` when a task whose failure stops its owner failed."""
        if self.failure is not None:
            raise self.failure


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return (f"{name}: {text}" if text and text != name else name)[:200]
