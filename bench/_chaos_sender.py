"""The provider-like sender of bench/chaos.py: Doitong as the receivers see it on a bad day.

Per job it sends `processing` and then the final status (`completed`, or `failed` for one job in
ten), each webhook signed with the endpoint's secret (`X-Doitong-Signature: sha256=<hex>`) and
named by its own `X-Doitong-Delivery` id, and retries each until it is answered 2xx: after a 5xx,
a timeout or a refused or dropped connection, with exponential back-off (stamina), on the other
receiver. The first receiver of each webhook is chosen at random. Some jobs, chosen from --seed:
- reordered: the final status first, then `processing`, which must change nothing;
- duplicated: a webhook sent again with the same bytes and delivery id once answered, or twice
  at once to both receivers;
- redelivered: the final webhook again under a new delivery id once answered (a provider that
  retries with new ids), which must make no second event.

`truth` says, per job whose webhooks were all answered 2xx, which events a subscriber must get
and in which order: `processing` then the final status, or only the final status when it was
reordered (the late `processing` is history, not an event).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
import orjson
import stamina
import stamina.instrumentation

from receiver.inbound.signatures import sign

WEBHOOK_PATH = "/webhooks/doitong"
_BASE = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
REQUEST_TIMEOUT = 20.0  # longer than the receiver's wait for a database connection before its 503

Duplicate = Literal["after", "race"] | None


@dataclass(frozen=True, slots=True)
class Mix:
    """How often a job gets each kind of mistreatment (fractions of jobs)."""

    failed: float = 0.1
    reorder: float = 0.1
    duplicate: float = 0.1
    redeliver: float = 0.1


@dataclass(frozen=True, slots=True)
class Plan:
    index: int
    job_id: str
    final: str
    reorder: bool
    duplicate: Duplicate
    redeliver: bool

    @property
    def statuses(self) -> tuple[str, str]:
        return (self.final, "processing") if self.reorder else ("processing", self.final)

    @property
    def expected(self) -> tuple[str, ...]:
        """The events a subscriber must get for this job, in order."""
        return (self.final,) if self.reorder else ("processing", self.final)


def plans(jobs: int, mix: Mix, seed: int, nonce: str) -> Iterator[Plan]:
    rng = random.Random(seed)
    for i in range(jobs):
        duplicate: Duplicate = None
        if rng.random() < mix.duplicate:
            duplicate = "race" if rng.random() < 0.5 else "after"
        yield Plan(
            i,
            f"chaos-{nonce}-{i:07d}",
            "failed" if rng.random() < mix.failed else "completed",
            rng.random() < mix.reorder,
            duplicate,
            rng.random() < mix.redeliver,
        )


def document(plan: Plan, status: str) -> dict[str, Any]:
    """Doitong's webhook body for the job at `status`."""
    created = _BASE + timedelta(seconds=plan.index % 86_400)
    done = status in ("completed", "failed")
    return {
        "id": plan.job_id,
        "status": status,
        "url": f"https://cdn.doitong-outputs.example/outputs/hedra/{plan.job_id}.mp4"
        if status == "completed"
        else None,
        "service": "hedra",
        "createdAt": _iso(created),
        "completedAt": _iso(created + timedelta(seconds=37.5)) if done else None,
        "metadata": {"duration": 12.48, "width": 1280, "height": 720},
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Tally:
    requests: int = 0
    acked: int = 0  # answered 2xx
    accepted: int = 0  # ... with "accepted"
    duplicate_answers: int = 0  # ... with "duplicate"
    server_errors: int = 0  # 5xx, retried
    connection_errors: int = 0  # refused, dropped or timed out, retried
    refused: int = 0  # 4xx: not retried, a failed check
    refusals: list[str] = field(default_factory=list)
    jobs_done: int = 0


class _Retry(Exception):
    """A failed attempt the provider retries."""


class Sender:
    def __init__(
        self, ports: list[int], secret: str, *, jobs: int, rate: float, concurrency: int, mix: Mix, seed: int
    ) -> None:
        self.urls = [f"http://127.0.0.1:{port}{WEBHOOK_PATH}" for port in ports]
        self.secret = secret
        self.jobs, self.rate, self.concurrency = jobs, rate, concurrency
        self.plans = plans(jobs, mix, seed, uuid.uuid4().hex[:8])
        self.rng = random.Random(seed + 1)
        self.tally = Tally()
        self.truth: dict[str, tuple[str, ...]] = {}
        self.kinds = {"reordered": 0, "duplicated": 0, "redelivered": 0, "failed": 0}
        # One log line per retry would bury the bench's output: the tally counts them instead.
        stamina.instrumentation.set_on_retry_hooks([])

    async def run(self) -> None:
        """Send every job, at most --rate jobs started per second (catching up after an outage
        as fast as the workers allow), and return when each was answered."""
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            start = asyncio.get_running_loop().time()
            await asyncio.gather(*(self._worker(session, start) for _ in range(self.concurrency)))

    async def _worker(self, session: aiohttp.ClientSession, start: float) -> None:
        loop = asyncio.get_running_loop()
        for plan in self.plans:  # one generator shared by all workers: each job is taken once
            delay = start + plan.index / self.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._job(session, plan)

    async def _job(self, session: aiohttp.ClientSession, plan: Plan) -> None:
        refused = self.tally.refused
        for status in plan.statuses:
            body = orjson.dumps(document(plan, status))
            delivery = str(uuid.uuid4())
            if plan.duplicate == "race":
                await asyncio.gather(
                    self._deliver(session, body, delivery, 0), self._deliver(session, body, delivery, 1)
                )
            else:
                await self._deliver(session, body, delivery, self.rng.randrange(2))
                if plan.duplicate == "after":
                    await self._deliver(session, body, delivery, self.rng.randrange(2))
        if plan.redeliver:
            body = orjson.dumps(document(plan, plan.final))
            await self._deliver(session, body, str(uuid.uuid4()), self.rng.randrange(2))
        if self.tally.refused == refused:
            self.truth[plan.job_id] = plan.expected
        self.tally.jobs_done += 1
        for kind, present in (
            ("reordered", plan.reorder),
            ("duplicated", plan.duplicate is not None),
            ("redelivered", plan.redeliver),
            ("failed", plan.final == "failed"),
        ):
            self.kinds[kind] += present

    async def _deliver(self, session: aiohttp.ClientSession, body: bytes, delivery: str, first: int) -> None:
        """POST until 2xx (or a 4xx, which a provider does not retry)."""
        headers = {
            "Content-Type": "application/json",
            "X-Doitong-Signature": sign(self.secret, body),
            "X-Doitong-Delivery": delivery,
        }
        async for attempt in stamina.retry_context(
            on=_Retry, attempts=None, timeout=None, wait_initial=0.05, wait_max=2.0, wait_jitter=0.2
        ):
            with attempt:
                await self._post(session, self.urls[(first + attempt.num - 1) % len(self.urls)], body, headers)

    async def _post(self, session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> None:
        tally = self.tally
        tally.requests += 1
        try:
            async with session.post(url, data=body, headers=headers) as response:
                status = response.status
                answer = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            tally.connection_errors += 1
            raise _Retry from None
        if 200 <= status < 300:
            tally.acked += 1
            outcome = orjson.loads(answer).get("status") if answer else None
            tally.accepted += outcome == "accepted"
            tally.duplicate_answers += outcome == "duplicate"
            return
        if status >= 500 or status in (408, 429):
            tally.server_errors += 1
            raise _Retry
        tally.refused += 1
        if len(tally.refusals) < 5:
            tally.refusals.append(f"{status} {answer[:200]!r}")


def kinds_line(sender: Sender) -> str:
    done = max(1, sender.tally.jobs_done)
    parts = (f"{kind} {count:,} ({100 * count / done:.0f} %)" for kind, count in sender.kinds.items())
    return ", ".join(parts)
