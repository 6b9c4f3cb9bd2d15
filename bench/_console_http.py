"""bench/console.py's client: GET a console page with the bearer token over a kept-alive loopback
connection, and how long it took, as the client saw it and as the server says (`Server-Timing`).
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from dataclasses import dataclass, field

import _report

_APP = re.compile(r"(?:^|,)\s*app;dur=([0-9.]+)")
_CPU = re.compile(r"(?:^|,)\s*cpu;dur=([0-9.]+)")


@dataclass
class Timed:
    status: int
    client_ms: float
    server_ms: float | None  # Server-Timing's `app`: the time the server took, when the page sends it
    cpu_ms: float | None  # Server-Timing's `cpu`: the CPU the serving thread used meanwhile
    body: bytes


class Client:
    """One keep-alive connection (reopened when the server closes it)."""

    def __init__(self, port: int, token: str, timeout: float = 30.0) -> None:
        self.port, self.token, self.timeout = port, token, timeout
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> Timed:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                started = time.perf_counter()
                self.conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
                response = self.conn.getresponse()
                body = response.read()
                elapsed = (time.perf_counter() - started) * 1000
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
                continue
            timing = response.getheader("Server-Timing") or ""
            app, cpu = _APP.search(timing), _CPU.search(timing)
            server = float(app.group(1)) if app else None
            cpu_ms = float(cpu.group(1)) if cpu else None
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return Timed(response.status, elapsed, server, cpu_ms, body)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Series:
    """The timings of one page."""

    client: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    bytes: int = 0

    def add(self, timed: Timed) -> None:
        self.client.append(timed.client_ms)
        if timed.server_ms is not None:
            self.server.append(timed.server_ms)
        if timed.cpu_ms is not None:
            self.cpu.append(timed.cpu_ms)
        self.statuses[timed.status] = self.statuses.get(timed.status, 0) + 1
        self.bytes = len(timed.body)

    def p(self, q: float, server: bool = False) -> float:
        return _report.percentile(sorted(self.server if server else self.client), q)


@dataclass(frozen=True)
class Reader:
    """One person at the console: the pages they open in turn, and the seconds between two
    (0: back to back)."""

    paths: list[str]
    pause: float


class Readers:
    """A thread per reader, requesting its pages until stopped, while ingest is measured. Counts
    requests and failures."""

    def __init__(self, port: int, token: str, readers: list[Reader]) -> None:
        self.port, self.token, self.readers = port, token, readers
        self.stop_event = threading.Event()
        self.requests = 0
        self.failures: dict[str, int] = {}
        self.threads: list[threading.Thread] = []
        self.series = Series()
        self._lock = threading.Lock()

    def __enter__(self) -> Readers:
        for n, reader in enumerate(self.readers):
            thread = threading.Thread(target=self._loop, args=(n, reader), name=f"console-reader-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _loop(self, n: int, reader: Reader) -> None:
        client = Client(self.port, self.token)
        i = n  # readers of the same pages start at different ones
        try:
            while not self.stop_event.is_set():
                path = reader.paths[i % len(reader.paths)]
                i += 1
                try:
                    timed = client.get(path)
                except (http.client.HTTPException, OSError) as exc:
                    self._fail(path, type(exc).__name__)
                    time.sleep(0.1)
                    continue
                with self._lock:
                    self.requests += 1
                    self.series.add(timed)
                if timed.status != 200:
                    self._fail(path, str(timed.status))
                if reader.pause:
                    self.stop_event.wait(reader.pause)
        finally:
            client.close()

    def _fail(self, path: str, why: str) -> None:
        with self._lock:
            key = f"{path.split('?')[0]} {why}"
            self.failures[key] = self.failures.get(key, 0) + 1
