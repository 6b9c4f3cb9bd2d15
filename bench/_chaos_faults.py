"""The faults of bench/chaos.py, on a schedule spread over the sending window:

- kill: SIGKILL a receiver or a publisher chosen at random (its whole process group), and start
  it again 0.3 to 1.5 s later;
- PostgreSQL: `pg_ctl stop -m immediate`, 2 to 5 s down, start (crash recovery); some kills
  happen while it is down, so their processes start again without a database;
- NATS: stop (SIGTERM and SIGKILL in turn), 1 to 3 s down, start on the same port and store.

The watcher polls every process twice a second: one found dead that the benchmark did not kill
exited on its own (a target: 0); it is logged and started again so the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Literal

import _chaos_cluster
import _run

Kind = Literal["kill", "postgres", "nats"]
KILLS_WHILE_DOWN = 0.2  # the share of the kills made while PostgreSQL is down


@dataclass(frozen=True, slots=True)
class Fault:
    at: float  # seconds after sending started
    kind: Kind
    kills_while_down: int = 0


def schedule(kills: int, pg_restarts: int, nats_restarts: int, seconds: float, rng: random.Random) -> list[Fault]:
    """The faults, spread evenly (with jitter) over `seconds`, in a random order of kinds."""
    while_down = [0] * pg_restarts
    for n in range(min(kills, max(pg_restarts, round(kills * KILLS_WHILE_DOWN))) if pg_restarts else 0):
        while_down[n % pg_restarts] += 1
    kill: list[Kind] = ["kill"]
    postgres: list[Kind] = ["postgres"]
    nats: list[Kind] = ["nats"]
    kinds = kill * (kills - sum(while_down)) + postgres * pg_restarts + nats * nats_restarts
    rng.shuffle(kinds)
    count = len(kinds)
    faults, restarts = [], iter(while_down)
    for n, kind in enumerate(kinds):
        at = (n + rng.uniform(0.25, 0.75)) * seconds / count
        faults.append(Fault(at, kind, next(restarts) if kind == "postgres" else 0))
    return faults


@dataclass
class Tally:
    kills: int = 0
    kills_while_pg_down: int = 0
    pg_restarts: int = 0
    nats_restarts: int = 0
    pg_down: list[float] = field(default_factory=list)  # seconds from stop to accepting again
    own_exits: int = 0

    @property
    def total(self) -> int:
        return self.kills + self.pg_restarts + self.nats_restarts


class Chaos:
    def __init__(
        self,
        services: list[_chaos_cluster.Service],
        postgres: _chaos_cluster.Postgres,
        nats: _chaos_cluster.Nats,
        rng: random.Random,
    ) -> None:
        self.services, self.postgres, self.nats, self.rng = services, postgres, nats, rng
        self.tally = Tally()
        self.nats_kills = 0

    async def run(self, faults: list[Fault]) -> None:
        """Each fault at its time, one after the other (a late one starts when the one before ends)."""
        start = time.monotonic()
        for fault in faults:
            delay = start + fault.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if fault.kind == "kill":
                await self.kill_one()
            elif fault.kind == "postgres":
                await self.restart_postgres(fault.kills_while_down)
            else:
                await self.restart_nats()

    async def kill_one(self, *, pg_down: bool = False) -> None:
        # Kill and start in the event loop's thread, so the watcher never sees one half-done.
        victim = self.rng.choice(self.services)
        victim.kill()
        self.tally.kills += 1
        self.tally.kills_while_pg_down += pg_down
        _run.log(f"SIGKILL {victim.name}" + (" (PostgreSQL is down)" if pg_down else ""))
        await asyncio.sleep(self.rng.uniform(0.3, 1.5))
        victim.start()

    async def restart_postgres(self, kills: int) -> None:
        down = self.rng.uniform(2.0, 5.0)
        stopped = time.monotonic()
        _run.log(f"PostgreSQL: immediate stop, {down:.1f} s down, {kills} kill(s) meanwhile")
        await asyncio.to_thread(self.postgres.stop_immediate)
        for _ in range(kills):
            await asyncio.sleep(down / (kills + 1))
            await self.kill_one(pg_down=True)
        await asyncio.sleep(max(0.0, stopped + down - time.monotonic()))
        await asyncio.to_thread(self.postgres.start)
        self.tally.pg_restarts += 1
        self.tally.pg_down.append(time.monotonic() - stopped)

    async def restart_nats(self) -> None:
        kill = self.tally.nats_restarts % 2 == 1  # SIGTERM first, then SIGKILL, in turn
        down = self.rng.uniform(1.0, 3.0)
        _run.log(f"NATS: {'SIGKILL' if kill else 'SIGTERM'}, {down:.1f} s down")
        await asyncio.to_thread(self.nats.stop, kill=kill)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.nats.start)
        self.tally.nats_restarts += 1
        self.nats_kills += kill

    async def watch(self, stop: asyncio.Event) -> None:
        """Until `stop`: restart (and count) every process that died without being killed."""
        while not stop.is_set():
            for service in self.services:
                if service.poll():
                    self.tally.own_exits += 1
                    _run.log(service.own_exits[-1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
