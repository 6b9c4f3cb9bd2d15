"""What the console keeps while the server runs: the keys derived from its token, the login
rate limit, and the replays running in this process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from starlette.types import Scope

from receiver.console import auth
from receiver.core.config import Settings

log = logging.getLogger("receiver.console")
_SCOPE_KEY = "receiver.console"


class Console:
    def __init__(self, settings: Settings) -> None:
        self.keys = auth.Keys(settings.console_token) if settings.console_token else None
        self.failures = auth.FailureLimit()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` beside the requests (a replay in batches); it is cancelled at shut-down."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("console task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def enter(self, scope: Scope) -> None:
        scope[_SCOPE_KEY] = self


def of(scope: Scope) -> Console:
    found = scope[_SCOPE_KEY]
    assert isinstance(found, Console)
    return found
