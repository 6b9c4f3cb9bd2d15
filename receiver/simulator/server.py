"""`Simulator`: the API's state, its ASGI app and its webhook sender; and serving it.

In-process use (tests, the demo):

    async with server.running(config) as (simulator, url):   # uvicorn on an ephemeral port
        ... POST f"{url}/graphql" ...
        await simulator.wait_idle()
        simulator.stats()["webhooks"]["duplicates"]

or mount `Simulator(config).app` yourself and call `start()` / `stop()` around
it: jobs accepted before `start()` keep their times and send their webhooks
once it is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from starlette.applications import Starlette

from receiver.core import embedded_uvicorn
from receiver.simulator import app, lifecycle
from receiver.simulator.config import Account, SimulatorConfig
from receiver.simulator.faults import Dice
from receiver.simulator.inputs import GenerateInput
from receiver.simulator.jobs import Job
from receiver.simulator.ratelimit import RateLimiter
from receiver.simulator.state import State
from receiver.simulator.stats import JobStats, RequestStats, Stats
from receiver.simulator.webhooks import Sender

log = logging.getLogger("receiver.simulator")


class Simulator:
    """A simulated Doitong API: `app` answers requests, `start()` runs the webhook sender."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.dice = Dice(config.seed)
        self._stats = Stats()
        self.state = State(config, self.dice)
        self.limiter = RateLimiter(config.clock)
        self._sender = Sender(config, self.dice, self._stats.webhooks)
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: list[Job] = []
        self._running = False
        self.app: Starlette = app.create(self)

    @property
    def request_stats(self) -> RequestStats:
        """The live request counters (the app updates them)."""
        return self._stats.requests

    async def start(self) -> None:
        """Open the webhook client and send the webhooks of jobs already accepted."""
        if self._running:
            return
        await self._sender.open()
        self._running = True
        waiting, self._waiting = self._waiting, []
        for job in waiting:
            self._announce(job)

    async def stop(self) -> None:
        """Cancel webhooks not yet sent (and their retries) and close the client."""
        self._running = False
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._sender.close()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def create(self, account: Account, request: GenerateInput) -> Job:
        """Accept a job (charging `account`) and schedule its webhooks; ApiError when refused."""
        job = self.state.create(account, request)
        if self._running:
            self._announce(job)
        else:
            self._waiting.append(job)
        return job

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every scheduled webhook was sent or given up; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._tasks:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True

    def job(self, job_id: str) -> Job | None:
        """A job by id, whichever key made it."""
        return self.state.job(job_id)

    def credits(self, key: str) -> int:
        """Credits left for an API key."""
        return self.state.credits(key)

    def stats(self) -> dict[str, Any]:
        """A JSON-ready copy of the counters (see `receiver.simulator.stats`)."""
        jobs = JobStats()
        for job in self.state.jobs():
            jobs.created += 1
            status = job.status()
            setattr(jobs, status, getattr(jobs, status) + 1)
        self._stats.jobs = jobs
        return self._stats.as_dict()

    def _announce(self, job: Job) -> None:
        task = asyncio.create_task(lifecycle.announce(job, self._sender, self._stats.webhooks), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhooks of %s stopped", task.get_name(), exc_info=task.exception())


class Running(NamedTuple):
    simulator: Simulator
    url: str


@contextlib.asynccontextmanager
async def running(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Running]:
    """A Simulator behind a real uvicorn in this event loop, until the block ends.

    `port=0` picks a free port; the URL yielded has the real one.
    """
    simulator = Simulator(config)
    await simulator.start()
    try:
        async with embedded_uvicorn.serving(
            simulator.app,
            host=host,
            port=port,
            lifespan="off",
            setting="--host/--port",
            server_header=False,
            timeout_graceful_shutdown=5,
        ) as url:
            yield Running(simulator, url)
    finally:
        await simulator.stop()
