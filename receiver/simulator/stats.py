"""Counters of what the simulator answered and injected, for tests and the demo.

Served as JSON at `GET /_simulator/stats` and returned by `Simulator.stats()`:

    {"requests": {...RequestStats}, "jobs": {...JobStats}, "webhooks": {...WebhookStats}}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class RequestStats:
    """API requests, by how they were answered."""

    total: int = 0  # every request to /graphql and /v1/avatar, 401s included
    unauthenticated: int = 0  # 401
    rate_limited: int = 0  # 429 RATE_LIMITED
    limited: int = 0  # 429 CONCURRENCY_LIMIT or DAILY_LIMIT
    insufficient_credits: int = 0  # 402
    bad_requests: int = 0  # 400
    not_found: int = 0  # NOT_FOUND (GraphQL 200 with errors, REST 404)
    injected_errors: int = 0  # 500 from --fail-rate
    disconnected: int = 0  # the client hung up before its body arrived (answered a quiet 400)
    ok: int = 0  # answered 200 (a GraphQL NOT_FOUND, which is 200 with errors, included)


@dataclass
class JobStats:
    """Jobs by current status (derived when asked)."""

    created: int = 0
    processing: int = 0
    completed: int = 0
    failed: int = 0


@dataclass
class WebhookStats:
    """Webhooks: what was sent and which faults were injected.

    `sent` counts genuine webhooks (one per job status announced, however many
    HTTP attempts it took); `attempts` counts every HTTP request made, forged
    and duplicate copies and retries included.
    """

    sent: int = 0
    delivered: int = 0  # genuine webhooks whose first copy got a 2xx
    gave_up: int = 0  # genuine copies that never got a 2xx in max_attempts
    attempts: int = 0
    retries: int = 0  # attempts after a non-2xx answer or a connection error
    duplicates: int = 0  # extra copies with the same delivery id (--duplicate-rate)
    reordered: int = 0  # processing webhooks sent after their terminal one (--reorder-rate)
    dropped: int = 0  # terminal webhooks never sent (--drop-rate)
    forged: int = 0  # extra copies signed with a wrong secret (--bad-signature-rate)


@dataclass
class Stats:
    requests: RequestStats = dataclasses.field(default_factory=RequestStats)
    jobs: JobStats = dataclasses.field(default_factory=JobStats)
    webhooks: WebhookStats = dataclasses.field(default_factory=WebhookStats)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)
