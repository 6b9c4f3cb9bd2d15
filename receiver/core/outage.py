"""A dependency that can be away (PostgreSQL, a broker): one log line when it goes, one when
it is back, and the back-off between attempts meanwhile.

A process rides out an outage by trying again: logging every attempt would bury the
log under identical lines (a publisher polls every second), and logging none would
hide the outage. `Dependency` keeps the state, so the log shows the change of state
only: `down(reason)` logs a warning the first time, `up()` logs how long it lasted.
`is_up` and `reason` are what a readiness probe reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
POOL_LOGGER = "psycopg.pool"


class Dependency:
    """The state of one dependency, as its last attempt found it."""

    def __init__(
        self,
        name: str,
        log: logging.Logger,
        *,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.name = name
        self._log = log
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._backoff = first_backoff
        self._down_since: float | None = None
        self.reason: str | None = None

    @property
    def is_up(self) -> bool:
        return self._down_since is None

    def down(self, reason: object, *, doing: str = "") -> None:
        """The last attempt failed: a warning when this is news, nothing (but the reason
        kept) when it was already down."""
        lines = str(reason).strip().splitlines()  # libpq adds hints on further lines
        self.reason = lines[0] if lines else type(reason).__name__
        if self._down_since is None:
            self._down_since = time.monotonic()
            what = f" ({doing})" if doing else ""
            self._log.warning("%s unavailable%s: %s; retrying until it is back", self.name, what, self.reason)

    def up(self) -> None:
        """The last attempt worked: one line when it had been down."""
        if self._down_since is not None:
            lasted = time.monotonic() - self._down_since
            self._log.info("%s is back after %.1fs", self.name, lasted)
        self._down_since = None
        self.reason = None
        self._backoff = self._first_backoff

    def next_wait(self) -> float:
        """How long to wait before the next attempt: doubling from the first back-off up to
        the cap, with ±10 % so that processes restarted together do not retry in step."""
        wait = self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)
        return wait * random.uniform(0.9, 1.1)

    async def pause(self, stop: asyncio.Event | None = None) -> None:
        """Sleep for `next_wait()`, or until `stop` is set."""
        wait = self.next_wait()
        if stop is None:
            await asyncio.sleep(wait)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)


# psycopg_pool's warnings that an outage repeats: every failed attempt to refill a pool, and
# every pooled connection found broken when the server went away.
_POOL_OUTAGE_LINES = ("error connecting in", "discarding closed connection")


class _PoolRetries(logging.Filter):
    """psycopg_pool's outage warnings (a few a second per pool at first) at debug level
    instead, since whoever uses the pool logs the outage once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith(_POOL_OUTAGE_LINES):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(POOL_LOGGER).isEnabledFor(logging.DEBUG)
        return True


_pool_retries = _PoolRetries()


def quiet_pool_retries() -> None:
    """Install the filter above on psycopg_pool's logger (once; for the whole process)."""
    logging.getLogger(POOL_LOGGER).addFilter(_pool_retries)
