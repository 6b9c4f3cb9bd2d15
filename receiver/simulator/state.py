"""Accounts, their credits and limits, and the jobs they created.

Order of checks when a job is asked for (after authentication and the
per-minute rate limit, which the app applies to every request): concurrent
jobs (429 CONCURRENCY_LIMIT), jobs today (429 DAILY_LIMIT, counted per UTC day
of the clock), credits (402 INSUFFICIENT_CREDITS). Nothing is charged unless
the job is created; credits are not refunded when a job fails (the
documentation says nothing about refunds).
"""

from __future__ import annotations

import math
import secrets
import string
import time
from dataclasses import dataclass

from receiver.simulator import pricing
from receiver.simulator.config import Account, SimulatorConfig
from receiver.simulator.errors import ApiError
from receiver.simulator.faults import Dice
from receiver.simulator.inputs import GenerateInput
from receiver.simulator.jobs import Job

_ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 12
DAY = 86_400


@dataclass
class _Balance:
    credits: int
    day: int = -1
    jobs_today: int = 0


class State:
    """Everything the simulated API remembers, in memory."""

    def __init__(self, config: SimulatorConfig, dice: Dice) -> None:
        self._config = config
        self._dice = dice
        self._accounts = {a.key: a for a in config.accounts}
        self._balances = {a.key: _Balance(a.credits) for a in config.accounts}
        self._jobs: dict[str, Job] = {}

    def authenticate(self, key: str | None) -> Account | None:
        """The account for an API key, or None when it is missing or unknown."""
        return self._accounts.get(key) if key else None

    def credits(self, key: str) -> int:
        """Credits `key` has left."""
        return self._balances[key].credits

    def create(self, account: Account, request: GenerateInput) -> Job:
        """Accept a job for `account` and charge for it, or raise the ApiError that says why not."""
        now = time.monotonic()
        wall = self._config.clock()
        limits = account.limits
        running = [j for j in self._jobs.values() if j.account == account.key and not j.finished(now)]
        if len(running) >= limits.concurrent_jobs:
            wait = min(j.due for j in running) - now
            raise ApiError(
                "CONCURRENCY_LIMIT",
                f"Concurrent job limit reached ({limits.concurrent_jobs} on the {limits.name} plan)",
                retry_after=max(1, math.ceil(wait)),
                limit=limits.concurrent_jobs,
            )
        balance = self._balances[account.key]
        day = int(wall // DAY)
        if balance.day != day:
            balance.day, balance.jobs_today = day, 0
        if limits.daily_jobs is not None and balance.jobs_today >= limits.daily_jobs:
            raise ApiError(
                "DAILY_LIMIT",
                f"Daily limit reached ({limits.daily_jobs} jobs a day on the {limits.name} plan)",
                retry_after=max(1, math.ceil((day + 1) * DAY - wall)),
                limit=limits.daily_jobs,
            )
        cost = pricing.cost(request.text)
        if balance.credits < cost:
            raise ApiError(
                "INSUFFICIENT_CREDITS",
                "Insufficient credits for this operation",
                creditsRequired=cost,
                creditsAvailable=balance.credits,
            )
        balance.credits -= cost
        balance.jobs_today += 1
        job = Job(
            id=self._new_id(),
            account=account.key,
            input=request,
            cost=cost,
            created_at=wall,
            latency=self._config.latency,
            due=now + self._config.latency,
            outcome="failed" if self._dice.roll(self._config.failure_rate) else "completed",
            reorder=self._dice.roll(self._config.reorder_rate),
            drop=self._dice.roll(self._config.drop_rate),
        )
        self._jobs[job.id] = job
        return job

    def find(self, account: Account, job_id: str) -> Job:
        """`account`'s job `job_id`; NOT_FOUND for unknown ids and other accounts' jobs alike."""
        job = self._jobs.get(job_id)
        if job is None or job.account != account.key:
            raise ApiError("NOT_FOUND", f"Avatar {job_id!r} not found")
        return job

    def job(self, job_id: str) -> Job | None:
        """Any job by id (for tests and the demo)."""
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        """Every job, oldest first."""
        return list(self._jobs.values())

    def _new_id(self) -> str:
        # Ids come from `secrets`, not the seeded generator: a seeded simulator
        # restarted against the same receiver database must not reuse job ids.
        while True:
            candidate = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))
            if candidate not in self._jobs:
                return candidate
