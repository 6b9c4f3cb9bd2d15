"""What bench/ingest.py and bench/publish.py share: databases made and dropped per run,
child environments, ports, versions, and the /proc CPU probe.

The scripts are run as files (`python bench/ingest.py`), so this module is imported
from the scripts' own folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WEBHOOK_PATH = "/webhooks/doitong"


class BenchError(Exception):
    """Something that stops the benchmark; printed as one line."""


def log(message: str) -> None:
    print(f"  .. {message}", flush=True)


def terminate(signum: int, frame: Any) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so every `finally` cleans up."""
    raise KeyboardInterrupt(f"signal {signum}")


def run_main(
    script: str,
    run: Callable[[argparse.Namespace, contextlib.ExitStack[Any]], int],
    args: argparse.Namespace,
    cleanup: Callable[[], None],
) -> int:
    """Run a benchmark to its exit status: 2 when it could not run, 130 when interrupted
    (Ctrl-C or SIGTERM); `cleanup` (kill what it started) runs whatever happened."""
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    with contextlib.ExitStack() as stack:
        try:
            return run(args, stack)
        except (BenchError, psycopg.Error) as exc:
            print(f"bench/{script}: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"\nbench/{script}: interrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(url: str, database: str) -> str:
    """`url` pointing at `database` instead (query, e.g. ?host=/socket, kept)."""
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql+psycopg") else parts.scheme
    return urlunsplit((scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")))
    return url


@contextlib.contextmanager
def database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh database, dropped on the way out (whatever happened)."""
    ident = sql.Identifier(name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield with_database(admin_url, name)
    finally:
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        except psycopg.Error as exc:
            print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)


def query_one(url: str, statement: str, params: Any = None) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(statement, params).fetchone()
        return row[0] if row else None


def child_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would configure a child behind our back."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECEIVER_", "DOITONG_", "PROMETHEUS_", "BENCH_")) and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


def signed_requests(bodies: Path, port: int) -> list[bytes]:
    """Whole HTTP/1.1 requests for the body file's lines (`sha256=<hex> <json>`), ready to write."""
    head = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n".encode()
    requests: list[bytes] = []
    with bodies.open("rb") as handle:
        for line in handle:
            signature, _, body = line.rstrip(b"\n").partition(b" ")
            requests.append(
                head + b"X-Doitong-Signature: " + signature + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
    return requests


def versions(names: Iterable[str]) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


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
