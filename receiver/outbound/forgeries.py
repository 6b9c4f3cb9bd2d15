"""Bursts of forged signatures: a leaked webhook URL, or a secret rotated on one side only.

Each server process adds its webhook counts to `webhook_outcomes` every few seconds
(receiver/inbound/outcomes.py); a 401 is outcome `unauthorized` there, the only count of them
there is. In the transaction of each flush that added some, `check_flushed` looks at the window
RECEIVER_FORGED_BURST names, across every process, and emits
`operational.endpoint_forged_signatures` for an endpoint over it, once per window whichever
process sees it first (operational.emit_once). Both queries here range over the leading column
of pk_webhook_outcomes (minute, endpoint, outcome): the window's minutes, endpoint and outcome
checked in the index.

The rows stay as long as the console's counts do: `receiver prune --older-than` clears them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import psycopg

from receiver.core import durations
from receiver.core.config import Burst
from receiver.inbound import outcomes
from receiver.outbound import operational

log = logging.getLogger("receiver.outbound.forgeries")

# Minutes that started within the window: a 5m window sums the current minute and the four
# before it.
OVER = """
SELECT endpoint, sum(requests)::bigint FROM webhook_outcomes
WHERE endpoint = ANY(%(endpoints)s) AND outcome = 'unauthorized' AND minute > now() - %(window)s
GROUP BY endpoint
HAVING sum(requests) >= %(threshold)s
ORDER BY endpoint
"""

PER_HOUR = """
SELECT endpoint, date_trunc('hour', minute) AS hour, sum(requests)::bigint FROM webhook_outcomes
WHERE outcome = 'unauthorized' AND minute >= %(since)s
GROUP BY 1, 2
"""


def check_flushed(burst: Burst | None) -> outcomes.AfterFlush | None:
    """The hook for outcomes.run: after a flush that added 401s, `check` their endpoints
    (None when RECEIVER_FORGED_BURST is off: the counts are kept all the same)."""
    if burst is None:
        return None

    async def after(conn: psycopg.AsyncConnection[Any], counts: Mapping[outcomes.Key, int]) -> list[str]:
        forged = {endpoint for endpoint, outcome in counts if outcome == outcomes.UNAUTHORIZED}
        return await check(conn, sorted(forged), burst)

    return after


async def check(conn: psycopg.AsyncConnection[Any], endpoints: Collection[str], burst: Burst) -> list[str]:
    """Emit for those of `endpoints` with `burst.failures` 401s or more within `burst.window`,
    unless one was emitted for them within the window; returns the endpoints emitted for. Call
    it in a transaction: each event commits with its mark."""
    if not endpoints:
        return []
    over = await (
        await conn.execute(OVER, {"endpoints": list(endpoints), "window": burst.window, "threshold": burst.failures})
    ).fetchall()
    emitted: list[str] = []
    for endpoint, failures in over:
        data = {
            "endpoint": endpoint,
            "failures": int(failures),
            "window": durations.format(burst.window),
            "threshold": burst.failures,
        }
        if await operational.emit_once(conn, "operational.endpoint_forged_signatures", data, window=burst.window):
            emitted.append(endpoint)
            log.warning(
                "endpoint %s: %d webhooks with a bad signature within %s (a leaked URL, or a secret rotated "
                "on one side only)",
                endpoint,
                failures,
                durations.format(burst.window),
            )
    return emitted


async def per_hour(conn: psycopg.AsyncConnection[Any], since: datetime) -> dict[str, dict[datetime, int]]:
    """Requests refused for their signature since `since`, per endpoint and hour (the console)."""
    found: dict[str, dict[datetime, int]] = {}
    for endpoint, hour, failures in await (await conn.execute(PER_HOUR, {"since": since})).fetchall():
        found.setdefault(endpoint, {})[hour] = int(failures)
    return found
