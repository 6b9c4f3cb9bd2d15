"""Where the CPU goes while a benchmark measures: cores busy per group of processes, read from
Linux /proc, and the groups (a server and its workers, PostgreSQL's processes, a program by name).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import psycopg


def postgres_pids(url: str) -> set[int]:
    """Backends of this database plus the server's own processes (WAL writer, checkpointer, ...)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR backend_type <> 'client backend'"
        ).fetchall()
        mine = conn.info.backend_pid
    return {row[0] for row in rows if row[0] != mine}


def descendants(pid: int) -> set[int]:
    """`pid` and every process under it (uvicorn's workers), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                data = Path(entry.path, "stat").read_bytes()
                parents[int(entry.name)] = int(data[data.rfind(b")") + 2 :].split()[1])
    family = {pid}
    grew = True
    while grew:
        children = {child for child, parent in parents.items() if parent in family}
        grew = not children <= family
        family |= children
    return family


def pids_named(command: str) -> set[int]:
    """Processes whose command is `command` (nats-server)."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(entry.path, "comm").read_text().strip() == command:
                    found.add(int(entry.name))
    return found


class CpuProbe:
    """CPU used by groups of processes between start and finish (Linux /proc), in cores busy
    (1.0 = one core all the time), plus interrupts/steal (loopback TCP is softirq work),
    every other task, and idle."""

    def __init__(self, groups: dict[str, set[int]]) -> None:
        self.groups = groups
        self.clock = os.sysconf("SC_CLK_TCK")
        self.started = time.monotonic()
        self.machine = self._machine()
        self.procs = self._procs()

    @staticmethod
    def available() -> bool:
        return Path("/proc/stat").exists() and hasattr(os, "sysconf")

    def _machine(self) -> tuple[float, float, float]:
        """Busy in tasks, busy in interrupts or stolen, idle: seconds."""
        values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, idle, iowait, irq, softirq, steal = values
        return (user + nice + system) / self.clock, (irq + softirq + steal) / self.clock, (idle + iowait) / self.clock

    def _procs(self) -> dict[int, float]:
        times: dict[int, float] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                data = Path(entry.path, "stat").read_bytes()
            except OSError:
                continue
            fields = data[data.rfind(b")") + 2 :].split()
            times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / self.clock
        return times

    def finish(self) -> dict[str, float]:
        """Cores busy per group, then "irq", "other" and "idle"."""
        elapsed = max(1e-6, time.monotonic() - self.started)
        busy0, irq0, idle0 = self.machine
        busy1, irq1, idle1 = self._machine()
        now = self._procs()
        shares: dict[str, float] = {}
        accounted = 0.0
        for name, pids in self.groups.items():
            used = sum(max(0.0, now[pid] - self.procs.get(pid, 0.0)) for pid in pids if pid in now)
            accounted += used
            shares[name] = used / elapsed
        shares["irq"] = (irq1 - irq0) / elapsed
        shares["other"] = max(0.0, (busy1 - busy0) - accounted) / elapsed
        shares["idle"] = (idle1 - idle0) / elapsed
        return shares
