"""When a job's webhooks go out, and the per-job faults (reorder, drop).

A job's `processing` webhook is sent shortly after it was accepted
(min(0.25 s, latency / 4)), its terminal one (`completed`/`failed`) at
`latency` seconds after the request. They go out one after the other, the
terminal one only once the processing one was delivered or given up, so
order is only ever broken on purpose:

- reorder: the processing webhook is held back and sent after the terminal one;
- drop: the terminal webhook is never sent; the job still finishes, so only
  polling `avatar(id)` / `GET /v1/avatar/{id}` can find out.
"""

from __future__ import annotations

import asyncio
import time

from receiver.simulator.jobs import Job
from receiver.simulator.stats import WebhookStats
from receiver.simulator.webhooks import Sender

PROCESSING_DELAY = 0.25


async def announce(job: Job, sender: Sender, stats: WebhookStats) -> None:
    """Send `job`'s webhooks at their times (returns at once when it has no webhookUrl)."""
    url = job.input.webhook_url
    if url is None:
        return
    accepted = job.due - job.latency
    await _until(accepted + min(PROCESSING_DELAY, job.latency / 4))
    if not job.reorder:
        await sender.deliver(url, job.webhook("processing"))
    await _until(job.due)
    if job.drop:
        stats.dropped += 1
    else:
        await sender.deliver(url, job.webhook(job.outcome))
    if job.reorder:
        if not job.drop:
            stats.reordered += 1
        await sender.deliver(url, job.webhook("processing"))


async def _until(deadline: float) -> None:
    """Sleep until time.monotonic() reaches `deadline`."""
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
