"""Subscriber health: a rate limit per subscriber, a circuit breaker, and auto-disable.

All three are state on the subscription's row, because every publisher process must see the same
(the claim's side of it is in `outbox.CLAIM`):
- **Rate limit** (`--rate 50/s`): each claim hands out slots one interval apart (20 ms at 50/s)
  from the subscription's `next_send_at`, which it moves past the slots it took, under the row's
  lock: any number of publishers together start at most that many attempts in any window, paced
  evenly. A delivery waits for its slot in the publisher's memory, holding no send slot; one
  that cannot start within half an interval of its slot goes back in line instead of bursting.
- **Circuit breaker**: RECEIVER_BREAKER_FAILURES failures in a row open the circuit for
  RECEIVER_BREAKER_COOLOFF; meanwhile nothing is claimed for the subscriber. Then one probe
  delivery (one across all publishers) decides: a success closes it, a failure opens it again
  for twice as long, up to MAX_COOLOFF.
- **Auto-disable**: a subscriber whose failures run for RECEIVER_DISABLE_AFTER without a single
  success (from the first failure after its last success, or its first failure ever, to a
  failure that long after) is disabled with that reason; its deliveries wait for `enable`.

Publishers report what their attempts found (`Report`) after the attempts, in batches
(`record`); a batch of successes of a healthy subscriber is not written at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from psycopg import AsyncConnection
from sqlalchemy.ext.asyncio import AsyncConnection as SaConnection

from receiver.core import durations, tables
from receiver.core.config import Settings
from receiver.core.errors import ConfigError, NotFound

# A failed probe doubles the cool-off up to this (or RECEIVER_BREAKER_COOLOFF, if longer).
MAX_COOLOFF = timedelta(minutes=30)

Unit = Literal["s", "m", "h"]
_PERIODS: dict[Unit, tuple[str, int]] = {"s": ("1 second", 1), "m": ("1 minute", 60), "h": ("1 hour", 3600)}
_PERIOD_UNITS = {timedelta(seconds=seconds): unit for unit, (_, seconds) in _PERIODS.items()}
_RATE = re.compile(r"([0-9]{1,9})/([smh])")
# Past this many attempts per second the pacing is finer than a publisher's timers (1 ms).
MAX_PER_SECOND = 1000


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `limit` attempts per second, minute or hour."""

    limit: int
    unit: Unit

    @property
    def interval(self) -> timedelta:
        """The spacing between two attempts."""
        return timedelta(seconds=_PERIODS[self.unit][1] / self.limit)

    def __str__(self) -> str:
        return f"{self.limit}/{self.unit}"


def parse_rate(text: str, *, setting: str = "--rate") -> Rate | None:
    """`50/s`, `300/m` or `1000/h`; `none` (or `off`) for no limit. ConfigError otherwise."""
    cleaned = text.strip().lower()
    if cleaned in ("none", "off"):
        return None
    match = _RATE.fullmatch(cleaned)
    if not match:
        raise ConfigError(f"{setting}: {text!r} is not a rate; write e.g. 50/s, 300/m or 1000/h (none: no limit)")
    rate = Rate(int(match.group(1)), match.group(2))  # type: ignore[arg-type]
    if rate.limit < 1:
        raise ConfigError(f"{setting}: {text!r} allows nothing; use at least 1 (none: no limit)")
    if rate.limit / _PERIODS[rate.unit][1] > MAX_PER_SECOND:
        raise ConfigError(f"{setting}: {text!r} is more than {MAX_PER_SECOND}/s; use none for no limit")
    return rate


def rate_of(limit: int | None, period: timedelta | None) -> Rate | None:
    """The rate stored in a subscription's row."""
    if limit is None or period is None:
        return None
    return Rate(limit, _PERIOD_UNITS[period])


async def set_rate(conn: SaConnection, subscription_id: str, rate: Rate | None) -> None:
    """Set or clear a subscription's rate limit; the next claim of any publisher applies it."""
    table = tables.subscriptions
    result = await conn.execute(
        table.update()
        .where(table.c.id == subscription_id)
        .values(
            rate_limit=rate.limit if rate else None,
            rate_period=timedelta(seconds=_PERIODS[rate.unit][1]) if rate else None,
            updated_at=sa.func.now(),
        )
    )
    if result.rowcount == 0:
        raise NotFound(f"subscription {subscription_id!r} does not exist")


# -- what the attempts found ------------------------------------------------------------------

Probe = Literal["ok", "failed", "released"]


@dataclass(slots=True)
class Report:
    """One publisher's attempts to one subscriber since its last report, in order, summed up."""

    succeeded: bool = False  # a success came, and `failures` came after the last one
    failures: int = 0
    first_failure_at: datetime | None = None  # the first of those failures
    probe: Probe | None = None  # how the probe this publisher sent ended

    def note(self, ok: bool, at: datetime, *, probe: bool = False) -> None:
        if ok:
            self.succeeded, self.failures, self.first_failure_at = True, 0, None
        else:
            self.failures += 1
            self.first_failure_at = self.first_failure_at or at
        if probe:
            self.probe = "ok" if ok else "failed"

    def merge(self, later: Report) -> None:
        """Add `later` (what came after this report) to it."""
        if later.succeeded:
            self.succeeded, self.failures, self.first_failure_at = True, later.failures, later.first_failure_at
        else:
            self.failures += later.failures
            self.first_failure_at = self.first_failure_at or later.first_failure_at
        self.probe = later.probe or self.probe

    def worth_writing(self, unhealthy: bool) -> bool:
        """Whether the report can change anything: a failure or a probe does; successes only when
        the subscriber may be failing (a streak to end, a circuit to close)."""
        return self.failures > 0 or self.probe is not None or (self.succeeded and unhealthy)


Change = Literal["circuit_opened", "circuit_closed", "subscriber_disabled"]


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of a subscriber's health that a report caused (operational event, log, metric)."""

    change: Change
    subscription_id: str
    url: str
    consecutive_failures: int
    failing_since: datetime | None
    circuit_open_until: datetime | None
    disabled_reason: str | None

    def data(self) -> dict[str, Any]:
        """The operational event's `data`."""
        data: dict[str, Any] = {
            "subscriber_id": self.subscription_id,
            "url": self.url,
            "consecutive_failures": self.consecutive_failures,
            "failing_since": _iso(self.failing_since),
        }
        if self.change == "circuit_opened":
            data["circuit_open_until"] = _iso(self.circuit_open_until)
        if self.change == "subscriber_disabled":
            data["reason"] = self.disabled_reason
        return data


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


# The rows are read as last committed and locked in id order, so two publishers reporting on the
# same subscribers wait for each other briefly, never in a cycle; a claim's gate never waits.
RECORD = """
WITH reported AS (
    SELECT * FROM unnest(%(ids)s::text[], %(succeeded)s::boolean[], %(failures)s::integer[],
                         %(first_failures)s::timestamptz[], %(probes)s::text[])
        AS h(id, succeeded, failures, first_failure_at, probe)
), locked AS (
    SELECT s.id, s.state, s.consecutive_failures, s.failing_since, s.circuit_open_until, s.circuit_cooloff
    FROM subscriptions s WHERE s.id = ANY(%(ids)s::text[])
    ORDER BY s.id
    FOR UPDATE
), streak AS (
    SELECT l.*, h.succeeded, h.probe, h.failures > 0 AS failing,
        CASE WHEN h.succeeded THEN h.failures ELSE l.consecutive_failures + h.failures END AS failures,
        CASE WHEN h.failures = 0 THEN CASE WHEN h.succeeded THEN NULL ELSE l.failing_since END
             WHEN h.succeeded THEN h.first_failure_at
             ELSE coalesce(l.failing_since, h.first_failure_at) END AS since
    FROM locked l JOIN reported h ON h.id = l.id
), decided AS (
    SELECT t.*,
        t.failures >= %(threshold)s AND (t.succeeded OR t.circuit_open_until IS NULL) AS opens,
        NOT t.succeeded AND t.circuit_open_until IS NOT NULL AND t.probe = 'failed' AS reopens,
        t.state = 'enabled' AND t.failing AND t.since <= now() - %(disable_after)s AS disables,
        least(coalesce(t.circuit_cooloff, %(cooloff)s) * 2, %(max_cooloff)s) AS doubled
    FROM streak t
)
UPDATE subscriptions s SET
    consecutive_failures = d.failures,
    failing_since = d.since,
    circuit_open_until = CASE
        WHEN d.opens THEN now() + %(cooloff)s
        WHEN d.reopens THEN now() + d.doubled
        WHEN d.succeeded THEN NULL
        WHEN d.probe = 'released' AND d.circuit_open_until IS NOT NULL THEN now()
        ELSE d.circuit_open_until END,
    circuit_cooloff = CASE
        WHEN d.opens THEN %(cooloff)s
        WHEN d.reopens THEN d.doubled
        WHEN d.succeeded THEN NULL
        ELSE d.circuit_cooloff END,
    circuit_probe = CASE WHEN d.succeeded OR d.probe IS NOT NULL THEN NULL ELSE s.circuit_probe END,
    state = CASE WHEN d.disables THEN 'disabled' ELSE s.state END,
    disabled_reason = CASE WHEN d.disables
        THEN 'no successful delivery since ' || to_char(d.since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
             || ' (RECEIVER_DISABLE_AFTER ' || %(disable_after_text)s || ')'
        ELSE s.disabled_reason END,
    updated_at = CASE WHEN d.disables THEN now() ELSE s.updated_at END
FROM decided d
WHERE s.id = d.id
RETURNING s.id, s.url,
    CASE WHEN d.disables THEN 'subscriber_disabled'
         WHEN d.opens AND d.circuit_open_until IS NULL THEN 'circuit_opened'
         WHEN d.succeeded AND NOT d.opens AND d.circuit_open_until IS NOT NULL THEN 'circuit_closed' END,
    s.consecutive_failures, s.failing_since, s.circuit_open_until, s.disabled_reason
"""


async def record(conn: AsyncConnection[Any], settings: Settings, reports: dict[str, Report]) -> list[Transition]:
    """Write `reports` (per subscription id) into the subscribers' health; returns what changed."""
    ids = sorted(reports)
    cursor = await conn.execute(
        RECORD,
        {
            "ids": ids,
            "succeeded": [reports[i].succeeded for i in ids],
            "failures": [reports[i].failures for i in ids],
            "first_failures": [reports[i].first_failure_at for i in ids],
            "probes": [reports[i].probe for i in ids],
            "threshold": settings.breaker_failures,
            "cooloff": settings.breaker_cooloff,
            "max_cooloff": max(MAX_COOLOFF, settings.breaker_cooloff),
            "disable_after": settings.disable_after,
            "disable_after_text": durations.format(settings.disable_after),
        },
    )
    return [Transition(row[2], row[0], row[1], *row[3:]) for row in await cursor.fetchall() if row[2] is not None]


# -- what operators see -------------------------------------------------------------------------

STATES = """
SELECT id, circuit_open_until > now(), consecutive_failures, state = 'disabled' FROM subscriptions
"""


@dataclass(frozen=True, slots=True)
class State:
    subscription_id: str
    circuit_open: bool
    consecutive_failures: int
    disabled: bool


async def states(conn: AsyncConnection[Any]) -> list[State]:
    """Every subscriber's health as the gauges show it."""
    cursor = await conn.execute(STATES)
    return [State(row[0], bool(row[1]), row[2], row[3]) for row in await cursor.fetchall()]
