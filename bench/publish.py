"""Outbox publishing: drain rate to HTTP and to NATS JetStream, and end-to-end latency,
for `receiver publish` next to a procrastinate baseline, in one run.

What it measures
    1. Drain to HTTP: N pending events (default 100,000) in the outbox, one HTTP
       subscriber (a local server in its own process that answers 200 at once);
       events/s from the first delivery the subscriber sees to the moment the
       database says all N are done (`deliveries.state = 'delivered'`).
    2. Drain to NATS: the same with the NATS JetStream broker as the only
       subscription; the first delivery is the first message in the stream.
    3. End-to-end latency: `receiver serve` and `receiver publish` running, signed
       webhooks POSTed at a steady --rate (default 500/s) for --duration s (default
       20, after a --warmup of 2 s that is not counted); for each event, the time
       from the webhook's 2xx (at the load generator) to its arrival at the
       subscriber, matched by event id (the `event_id` in the answer, `webhook-id`
       at the subscriber). Both processes read CLOCK_MONOTONIC (time.monotonic(),
       system-wide on Linux).
    The same three figures are measured for the baseline in bench/procrastinate_baseline.py:
    the ingest app defers a procrastinate task in the webhook's transaction, a
    procrastinate worker POSTs the event (or publishes it to JetStream). Both get the
    same concurrency. The table shows both, the ratio, the targets and PASS/FAIL.

How
    Every measurement gets a fresh database (`bench_publish_<figure>_<pid>` and
    `bench_procrastinate_<figure>_<pid>`) on --database-url (default: $DATABASE_URL,
    else postgresql://postgres@127.0.0.1:5432/postgres), dropped right after it; each
    NATS measurement gets its own stream and subject prefix (BENCHPUB_<pid>_<n>,
    benchpub<pid>n<n>), deleted afterwards. The receiver's database gets `receiver
    migrate`, `receiver subscribers add` BEFORE the events are created (subscriptions
    receive the events created after them), then the events are created directly in
    SQL by calling `receiver_ingest(...)` 5,000 rows per statement (the same function
    a webhook runs: inbound row, job, history, outbox event). The baseline's tasks are
    deferred with procrastinate's `batch_defer_async`. Then VACUUM ANALYZE and
    CHECKPOINT, and the publisher (worker) is started and timed.

    .venv/bin/python bench/publish.py                            # defaults: 100,000 events, 500/s for 20 s
    .venv/bin/python bench/publish.py --events 20000 --duration 5  # quick
    .venv/bin/python bench/publish.py --only receiver --skip-nats

Targets (2-core machine): >= 2,000 events/s to HTTP, >= 5,000 events/s to NATS,
end-to-end p50 <= 20 ms and p99 <= 100 ms, and ahead of the procrastinate baseline
on each figure. Exit status 0 when the measurements ran (1 with --strict when a
target failed), 2 when they could not. Everything it starts and every database and
stream it creates is removed at the end, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg
from _common import (
    DEFAULT_ADMIN_URL,
    BenchError,
    CpuProbe,
    child_env,
    database,
    free_port,
    log,
    postgres_pids,
    query_one,
    redact,
    run_main,
    signed_requests,
    versions,
)
from psycopg import sql

from receiver.inbound.signatures import sign

BENCH_DIR = Path(__file__).resolve().parent
PACKAGES = ("procrastinate", "psycopg", "aiohttp", "nats-py", "uvloop")  # versions printed in the header
BASELINE = BENCH_DIR / "procrastinate_baseline.py"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
SUBSCRIBER_PATH = "/hooks/doitong"

TARGET_HTTP_PER_S = 2000.0
TARGET_NATS_PER_S = 5000.0
TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0

SEED_BATCH = 5000
T = TypeVar("T")


def tidy(url: str) -> None:
    """After seeding, the same for both systems: VACUUM ANALYZE each table that has rows (what
    autovacuum would do after a bulk insert), and CHECKPOINT. Empty tables are left never
    analyzed, as autovacuum leaves them: analyzing `deliveries` while it is empty would tell the
    planner it stays tiny, and the claim query then picks a plan that is quadratic in the pending
    deliveries (see bench/README.md)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            ident = sql.Identifier(table)
            if conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident)).fetchone() == (True,):
                conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ident))
        conn.execute("CHECKPOINT")


@contextlib.contextmanager
def periodic_analyze(url: str, table: str, every: float) -> Iterator[None]:
    """--analyze-every: ANALYZE `table` every `every` seconds while the block runs, as autovacuum
    would (it is off on some servers, and its default thresholds lag behind a sudden backlog)."""
    if every <= 0:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as conn:
            while not stop.wait(every):
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))

    thread = threading.Thread(target=loop, name=f"analyze-{table}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def new_whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def master_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


# ------------------------------------------------------------------------ processes


class Proc:
    """A child process in its own session (so a Ctrl-C reaches only us), output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logfile: Path) -> None:
        self.name, self.argv, self.env, self.logfile = name, argv, env, logfile
        with logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _procs.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pids(self) -> set[int]:
        return {self.proc.pid}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def stop(self, timeout: float = 40.0, *, signalled: bool = False) -> int | None:
        """SIGTERM (once: a second one makes some programs stop hard), wait, then SIGKILL."""
        _procs.discard(self)
        if self.proc.poll() is None:
            if not signalled:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        _procs.discard(self)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    | " + line for line in text[-lines:])

    def errors(self) -> str:
        """Warning/error lines it logged (not expected in a clean run)."""
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        bad = [line for line in text if re.search(r"Traceback|\bERROR\b|\bWARNING\b|\bCRITICAL\b", line)]
        return "\n".join("    | " + line for line in bad[:10])


_procs: set[Proc] = set()


class Procs:
    """Several processes of one kind (procrastinate workers), handled as one."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs
        self.name = procs[0].name + (f" x{len(procs)}" if len(procs) > 1 else "")

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    def check(self) -> None:
        for p in self.procs:
            p.check()

    def stop(self, timeout: float = 40.0) -> int | None:
        for p in self.procs:
            if p.alive():
                p.proc.send_signal(signal.SIGTERM)
        codes = [p.stop(timeout, signalled=True) for p in self.procs]
        return next((c for c in codes if c not in (0, None)), codes[0])

    def tail(self, lines: int = 30) -> str:
        return "\n".join(p.tail(lines) for p in self.procs)

    def errors(self) -> str:
        return "\n".join(e for e in (p.errors() for p in self.procs) if e)


def run_cli(argv: list[str], env: dict[str, str], what: str, timeout: float = 600) -> str:
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise BenchError(f"{what} failed ({proc.returncode}):\n{output}")
    return output


def wait_http(port: int, path: str, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        proc.check()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            response = conn.getresponse()
            last = f"{response.status}"
            response.read()
            conn.close()
            if response.status == 200:
                return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{proc.name} not ready after {timeout:.0f} s (last: {last}):\n{proc.tail()}")


def wait_sql(url: str, statement: str, proc: Proc | Procs, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check()
        if query_one(url, statement):
            return
        time.sleep(0.1)
    raise BenchError(f"{proc.name}: {what} not seen after {timeout:.0f} s:\n{proc.tail()}")


# ------------------------------------------------------------------------------ CPU


def pids_named(command: str) -> set[int]:
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(entry.path, "comm").read_text().strip() == command:
                    found.add(int(entry.name))
    return found


# ------------------------------------------------------------------ NATS (a loop in a thread)


class Nats:
    """nats-py from synchronous code: one connection on an event loop in a daemon thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-nats", daemon=True)
        self.thread.start()
        self.nc: Any = None
        self.call(self._connect())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self) -> None:
        import nats

        self.nc = await nats.connect(self.url, name="bench-publish", connect_timeout=3, max_reconnect_attempts=2)

    async def _add_stream(self, name: str, subjects: str) -> None:
        from nats.js.api import StorageType, StreamConfig

        jsm = self.nc.jsm()
        with contextlib.suppress(Exception):
            await jsm.delete_stream(name)
        # The configuration receiver/sinks/nats.py creates when the stream is missing.
        await jsm.add_stream(StreamConfig(name=name, subjects=[subjects], storage=StorageType.FILE))

    async def _delete_stream(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self.nc.jsm().delete_stream(name)

    async def _state(self, name: str) -> dict[str, Any]:
        reply = await self.nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=5)
        state: dict[str, Any] = orjson.loads(reply.data).get("state", {})
        return state

    def add_stream(self, name: str, subjects: str) -> None:
        self.call(self._add_stream(name, subjects))

    def delete_stream(self, name: str) -> None:
        self.call(self._delete_stream(name))

    def stream_state(self, name: str) -> tuple[int, float | None, float | None]:
        """Messages, and the first and last message times on this process's monotonic clock."""
        state = self.call(self._state(name))
        offset = time.time() - time.monotonic()
        count = int(state.get("messages", 0))
        if not count:
            return 0, None, None
        return count, _rfc3339(state["first_ts"]) - offset, _rfc3339(state["last_ts"]) - offset

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.nc.close(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _rfc3339(text: str) -> float:
    """nats-server's timestamps carry nanoseconds; Python reads microseconds."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not match:
        raise BenchError(f"cannot read NATS timestamp {text!r}")
    base, fraction, zone = match.groups()
    moment = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return moment.timestamp() + float("0." + (fraction or "0"))


# ------------------------------------------------------------------- the fast subscriber


def subscriber_main(argv: list[str]) -> int:
    """`publish.py _subscriber --port P --out FILE`: answers every POST with 200 at once and
    records (CLOCK_MONOTONIC, webhook-id); GET /stats answers the counts as JSON. On
    SIGTERM it writes the records to FILE and exits."""
    parser = argparse.ArgumentParser(prog="publish.py _subscriber")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import uvloop

    return uvloop.run(_subscriber(args.port, args.out))


async def _subscriber(port: int, out: Path) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    times: list[float] = []
    ids: list[bytes] = []
    seen: set[bytes] = set()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    clock = time.monotonic

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.buffer = bytearray()

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(self.buffer[:end]).split(b"\r\n")
                length = 0
                event_id = b""
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    lowered = name.strip().lower()
                    if lowered == b"content-length":
                        length = int(value)
                    elif lowered == b"webhook-id":
                        event_id = value.strip()
                total = end + 4 + length
                if len(self.buffer) < total:
                    return
                del self.buffer[:total]
                if lines[0].startswith(b"GET /stats"):
                    body = orjson.dumps(
                        {
                            "count": len(times),
                            "distinct": len(seen),
                            "first": times[0] if times else None,
                            "last": times[-1] if times else None,
                        }
                    )
                    self.transport.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                        % (len(body), body)
                    )
                    continue
                times.append(clock())
                ids.append(event_id)
                seen.add(event_id)
                self.transport.write(ok)

    server = await loop.create_server(Server, "127.0.0.1", port, backlog=1024)
    await stop.wait()
    server.close()
    out.write_bytes(orjson.dumps({"times": times, "ids": [i.decode() for i in ids]}))
    return 0


class Subscriber:
    def __init__(self, tmp: Path, tag: str) -> None:
        self.port = free_port()
        self.out = tmp / f"subscriber-{tag}.json"
        self.proc = Proc(
            f"subscriber ({tag})",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_subscriber",
                "--port",
                str(self.port),
                "--out",
                str(self.out),
            ],
            child_env(),
            tmp / f"subscriber-{tag}.log",
        )
        wait_http(self.port, "/stats", self.proc, timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SUBSCRIBER_PATH}"

    def stats(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/stats")
            data: dict[str, Any] = orjson.loads(conn.getresponse().read())
            return data
        finally:
            conn.close()

    def finish(self) -> tuple[list[float], list[str]]:
        self.proc.stop(timeout=30)
        try:
            data = orjson.loads(self.out.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise BenchError(f"the subscriber left no records ({exc}):\n{self.proc.tail()}") from None
        return data["times"], data["ids"]


# --------------------------------------------------------------- the steady load generator


def load_main(argv: list[str]) -> int:
    """`publish.py _load …`: POSTs the pre-signed bodies at a fixed schedule (open loop:
    request i leaves at start + i/rate on an idle keep-alive connection, a new one when
    none is idle), records when each answer arrived (CLOCK_MONOTONIC) and its event_id."""
    parser = argparse.ArgumentParser(prog="publish.py _load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    requests = signed_requests(args.bodies, args.port)
    import uvloop

    records = uvloop.run(_load(args.port, requests, args.rate))
    args.out.write_bytes(orjson.dumps(records))
    return 0


async def _load(port: int, requests: list[bytes], rate: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = time.monotonic
    n = len(requests)
    sent = [0.0] * n
    done = [0.0] * n
    status = [0] * n
    event_ids: list[str | None] = [None] * n
    idle: list[Client] = []
    pending = [n]
    errors = [0]
    finished = loop.create_future()

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.buffer = b""
            self.current = -1
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def send(self, i: int) -> None:
            assert self.transport is not None
            self.current = i
            sent[i] = clock()
            self.transport.write(requests[i])

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].split(b"\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            now = clock()
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            i, self.current = self.current, -1
            done[i] = now
            status[i] = int(head[0].split(b" ", 2)[1])
            with contextlib.suppress(ValueError, AttributeError):
                event_ids[i] = orjson.loads(body).get("event_id")
            idle.append(self)
            pending[0] -= 1
            if pending[0] == 0 and not finished.done():
                finished.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            if self in idle:
                idle.remove(self)
            if self.current >= 0:
                errors[0] += 1
                pending[0] -= 1
                self.current = -1
                if pending[0] == 0 and not finished.done():
                    finished.set_result(None)

    async def connect() -> Client:
        _, client = await loop.create_connection(Client, "127.0.0.1", port)
        return client

    for client in await asyncio.gather(*(connect() for _ in range(32))):
        idle.append(client)
    start = clock() + 0.1
    late = 0.0
    for i in range(n):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        try:
            client = idle.pop() if idle else await connect()
        except OSError:
            errors[0] += 1
            pending[0] -= 1
            continue
        client.send(i)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished, timeout=30)
    return {
        "start": start,
        "sent": sent,
        "done": done,
        "status": status,
        "event_ids": event_ids,
        "errors": errors[0],
        "max_late_ms": late * 1000,
        "connections": len(idle),
    }


def make_bodies(path: Path, count: int, *, nonce: str, secret: str) -> float:
    """`count` signed Doitong bodies, each for a distinct job; returns the mean size."""
    base = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    total = 0
    with path.open("wb") as out:
        for i in range(count):
            job_id = f"bench-{nonce}-{i:08d}"
            created = base + timedelta(seconds=i % 86_400)
            document = {
                "id": job_id,
                "status": "completed",
                "url": (
                    f"https://cdn.doitong-outputs.example/outputs/hedra/{job_id}/hedra-avatar-1280x720-h264.mp4"
                    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250601"
                    "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250601T120000Z&X-Amz-Expires=604800"
                    f"&X-Amz-SignedHeaders=host&X-Amz-Signature={secrets.token_hex(32)}"
                ),
                "service": "hedra",
                "createdAt": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "completedAt": (created + timedelta(seconds=37.5))
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "metadata": {"duration": 12.48, "width": 1280, "height": 720},
            }
            body = orjson.dumps(document)
            total += len(body)
            out.write(sign(secret, body).encode() + b" " + body + b"\n")
    return total / count if count else 0.0


# --------------------------------------------------------------------- seeding the outbox

# The receiver's own ingest function, once per row: inbound row, job, history, outbox event.
SEED_RECEIVER = """
SELECT count(r.result_event_id)
FROM generate_series(%(first)s::int, %(last)s::int) AS g(i)
CROSS JOIN LATERAL (
  SELECT 'bench-' || %(nonce)s::text || '-' || lpad(g.i::text, 8, '0') AS job_id,
         timestamptz '2025-06-01 12:00:00+00' + make_interval(secs => g.i %% 86400) AS created
) j
CROSS JOIN LATERAL (
  SELECT 'https://cdn.doitong-outputs.example/outputs/hedra/' || j.job_id
    || '/hedra-avatar-1280x720-h264.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256'
    || '&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%%2F20250601%%2Fus-east-1%%2Fs3%%2Faws4_request'
    || '&X-Amz-Date=20250601T120000Z&X-Amz-Expires=604800&X-Amz-SignedHeaders=host&X-Amz-Signature='
    || encode(sha256(convert_to(j.job_id, 'UTF8')), 'hex') AS url
) u
CROSS JOIN LATERAL (
  SELECT convert_to(jsonb_build_object(
    'id', j.job_id, 'status', 'completed', 'url', u.url, 'service', 'hedra',
    'createdAt', to_char(j.created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'completedAt', to_char((j.created + interval '37.5 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'metadata', jsonb_build_object('duration', 12.48, 'width', 1280, 'height', 720))::text, 'UTF8') AS body
) b
CROSS JOIN LATERAL receiver_ingest(
  'doitong', 'bench:' || j.job_id, sha256(b.body), '{}'::jsonb, b.body, j.job_id, 'completed', 'hedra', u.url,
  '{"duration": 12.48, "width": 1280, "height": 720}'::jsonb, j.created, j.created + interval '37.5 seconds',
  12.48, 1280, 720) r
"""


def seed_receiver(url: str, events: int, nonce: str) -> float:
    started = time.monotonic()
    created = 0
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(0, events, SEED_BATCH):
            last = min(events, first + SEED_BATCH) - 1
            row = conn.execute(SEED_RECEIVER, {"first": first, "last": last, "nonce": nonce}).fetchone()
            created += row[0] if row else 0
    if created != events:
        raise BenchError(f"seeding created {created} outbox events, not {events}")
    return time.monotonic() - started


# --------------------------------------------------------------------------- results


@dataclass
class Drain:
    system: str
    sink: str
    events: int
    seed_s: float
    body_bytes: float
    settings: str
    first: float | None = None  # first arrival at the sink (monotonic)
    last: float | None = None  # last arrival at the sink
    done_at: float | None = None  # the database said all were done
    done: int = 0
    arrived: int = 0
    distinct: int | None = None
    failed: int = 0
    cpu: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.done == self.events

    @property
    def rate(self) -> float:
        """Events/s from the first arrival to all done in the database (to the give-up moment otherwise)."""
        if self.first is None or self.done_at is None or self.done_at <= self.first:
            return 0.0
        return self.done / (self.done_at - self.first)

    @property
    def sink_rate(self) -> float:
        if self.first is None or self.last is None or self.last <= self.first:
            return 0.0
        return self.arrived / (self.last - self.first)


@dataclass
class Latency:
    system: str
    settings: str
    sent: int = 0
    ok: int = 0
    non_2xx: int = 0
    errors: int = 0
    accepted: int = 0
    matched: int = 0
    missing: int = 0
    seconds: float = 0.0
    max_late_ms: float = 0.0
    trend: tuple[float, float] = (float("nan"), float("nan"))  # median latency, first and last quarter
    answer: list[float] = field(default_factory=list)  # webhook answer times, ms (sorted)
    e2e: list[float] = field(default_factory=list)  # 2xx -> subscriber, ms (sorted)
    cpu: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    def p(self, q: float) -> float:
        return percentile(self.e2e, q)


# ------------------------------------------------------------------------- the context


@dataclass
class Ctx:
    args: argparse.Namespace
    stack: contextlib.ExitStack
    admin_url: str
    tmp: Path
    webhook_secret: str
    subscriber_secret: str
    master_key: str
    nonce: str
    nats: Nats | None
    streams: int = 0

    def db(self, name: str) -> contextlib.AbstractContextManager[str]:
        return database(self.admin_url, f"{name}_{os.getpid()}")

    def stream(self) -> tuple[str, str]:
        """A fresh JetStream stream and subject prefix for one measurement."""
        assert self.nats is not None
        self.streams += 1
        name, prefix = f"BENCHPUB_{os.getpid()}_{self.streams}", f"benchpub{os.getpid()}n{self.streams}"
        self.nats.add_stream(name, f"{prefix}.>")
        return name, prefix

    def receiver_env(self, url: str, **extra: str) -> dict[str, str]:
        return child_env(
            DATABASE_URL=url,
            RECEIVER_MASTER_KEY=self.master_key,
            RECEIVER_HOME=str(self.tmp / "receiver-home"),
            RECEIVER_LOG_LEVEL="warning",
            RECEIVER_DENY_NETWORKS="",
            RECEIVER_SUBSCRIBER_CONCURRENCY=str(self.args.subscriber_concurrency),
            DOITONG_WEBHOOK_SECRET=self.webhook_secret,
            **extra,
        )

    def baseline_env(self, url: str, **extra: str) -> dict[str, str]:
        return child_env(
            DATABASE_URL=url,
            BENCH_PROCRASTINATE_POOL=str(self.args.baseline_pool),
            DOITONG_WEBHOOK_SECRET=self.webhook_secret,
            BENCH_SUBSCRIBER_SECRET=self.subscriber_secret,
            **extra,
        )

    def publisher_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "receiver",
            "publish",
            "--metrics-port",
            "0",
            "--concurrency",
            str(self.args.concurrency),
        ]

    def workers(self, env: dict[str, str], tag: str) -> Procs:
        argv = [sys.executable, str(BASELINE), "worker", "--concurrency", str(self.args.concurrency)]
        return Procs(
            [
                Proc(f"procrastinate worker ({tag})", argv, env, self.tmp / f"worker-{tag}-{n}.log")
                for n in range(self.args.baseline_workers)
            ]
        )

    @property
    def receiver_settings(self) -> str:
        return (
            f"receiver publish --concurrency {self.args.concurrency}, "
            f"RECEIVER_SUBSCRIBER_CONCURRENCY={self.args.subscriber_concurrency}, other settings default "
            "(RECEIVER_POLL_INTERVAL 1s, pool 4+1 connections + LISTEN)"
        )

    @property
    def baseline_settings(self) -> str:
        return (
            f"{self.args.baseline_workers} procrastinate worker process(es), concurrency={self.args.concurrency}"
            f" each, PsycopgConnector pool "
            f"{self.args.baseline_pool}, listen_notify on, fetch_job_polling_interval 1 s, delete_jobs never, "
            "retry 10 x 5 s"
        )


def migrate(ctx: Ctx, url: str) -> None:
    run_cli([sys.executable, "-m", "receiver", "migrate"], ctx.receiver_env(url), "receiver migrate", timeout=300)
    if ctx.args.receiver_sql is not None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(ctx.args.receiver_sql.read_text().encode())


def add_subscriber(ctx: Ctx, url: str, target: str) -> None:
    run_cli(
        [sys.executable, "-m", "receiver", "subscribers", "add", target, "--secret", ctx.subscriber_secret],
        ctx.receiver_env(url),
        "receiver subscribers add",
    )


# ---------------------------------------------------------------------------- drains


def wait_drain(
    ctx: Ctx,
    result: Drain,
    worker: Proc | Procs,
    sink_count: Callable[[], tuple[int, float | None, float | None]],
    done_sql: str,
    url: str,
    cpu_groups: Callable[[], dict[str, set[int]]],
) -> None:
    """From the first arrival at the sink to all done in the database; CPU in between."""
    args = ctx.args
    deadline = time.monotonic() + 60
    probe: CpuProbe | None = None
    count = 0
    while True:
        worker.check()
        count, _, _ = sink_count()
        if count > 0:
            if CpuProbe.available():
                probe = CpuProbe(cpu_groups())
            break
        if time.monotonic() > deadline:
            raise BenchError(f"nothing reached the sink 60 s after {worker.name} started:\n{worker.tail()}")
        time.sleep(0.02)
    log(f"{result.system} -> {result.sink}: first delivery seen; draining")
    deadline = time.monotonic() + args.drain_timeout
    last_report = time.monotonic()
    while count < result.events and time.monotonic() < deadline:
        worker.check()
        time.sleep(0.1)
        count, _, _ = sink_count()
        if time.monotonic() - last_report > 15:
            log(f"{result.system} -> {result.sink}: {count:,} of {result.events:,} at the sink")
            last_report = time.monotonic()
    # All at the sink (or out of time): now wait for the database to say so.
    settle = time.monotonic() + (30 if count >= result.events else 0)
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(done_sql).fetchone()
            result.done = int(row[0]) if row else 0
            result.done_at = time.monotonic()
            if result.done >= result.events or time.monotonic() >= settle:
                break
            time.sleep(0.1)
    if probe is not None:
        result.cpu = probe.finish()
    result.arrived, result.first, result.last = sink_count()
    if not result.complete:
        result.notes.append(
            f"INCOMPLETE: {result.done:,} of {result.events:,} done after --drain-timeout {args.drain_timeout:g} s; "
            "the rate is over the time it had"
        )


def drain_receiver(ctx: Ctx, sink: str) -> Drain:
    args = ctx.args
    with ctx.db(f"bench_publish_{sink}") as url:
        log(f"receiver -> {sink}: receiver migrate")
        migrate(ctx, url)
        subscriber: Subscriber | None = None
        extra: dict[str, str] = {}
        stream = ""
        if sink == "http":
            subscriber = Subscriber(ctx.tmp, f"receiver-{sink}")
            add_subscriber(ctx, url, subscriber.url)
        else:
            assert ctx.nats is not None
            stream, prefix = ctx.stream()
            ctx.stack.callback(ctx.nats.delete_stream, stream)
            extra = {
                "RECEIVER_NATS_URL": args.nats_url,
                "RECEIVER_NATS_STREAM": stream,
                "RECEIVER_NATS_SUBJECT_PREFIX": prefix,
            }
            # The broker's subscription, before the events (the publisher would add it at start-up,
            # after them, and it receives only events created after it was added).
            query_one(
                url,
                "INSERT INTO subscriptions (id, kind, url) VALUES ('nats', 'nats', %s) RETURNING 1",
                (args.nats_url,),
            )
        log(f"receiver -> {sink}: creating {args.events:,} events with receiver_ingest(...)")
        seed_s = seed_receiver(url, args.events, ctx.nonce)
        body = float(query_one(url, "SELECT avg(octet_length(payload::text)) FROM outbox_events") or 0)
        tidy(url)
        result = Drain("receiver", sink, args.events, seed_s, body, ctx.receiver_settings)
        log(f"receiver -> {sink}: {args.events:,} events in {seed_s:.1f} s; starting receiver publish")
        analyzing = ctx.stack.enter_context(contextlib.ExitStack())
        analyzing.enter_context(periodic_analyze(url, "deliveries", args.analyze_every))
        publisher = Proc(
            f"receiver publish ({sink})",
            ctx.publisher_argv(),
            ctx.receiver_env(url, **extra),
            ctx.tmp / f"publish-{sink}.log",
        )
        try:
            if subscriber is not None:
                sub = subscriber

                def sink_count() -> tuple[int, float | None, float | None]:
                    s = sub.stats()
                    return int(s["count"]), s["first"], s["last"]

                groups = lambda: {  # noqa: E731
                    "publisher": {publisher.pid},
                    "subscriber": {sub.proc.pid},
                    "postgres": postgres_pids(url),
                }
            else:
                nats = ctx.nats
                assert nats is not None

                def sink_count() -> tuple[int, float | None, float | None]:
                    return nats.stream_state(stream)

                groups = lambda: {  # noqa: E731
                    "publisher": {publisher.pid},
                    "nats-server": pids_named("nats-server"),
                    "postgres": postgres_pids(url),
                }
            wait_drain(
                ctx,
                result,
                publisher,
                sink_count,
                "SELECT count(*) FROM deliveries WHERE state = 'delivered'",
                url,
                groups,
            )
            result.failed = int(
                query_one(url, "SELECT count(*) FROM deliveries WHERE state = 'dead' OR attempts > 1") or 0
            )
        finally:
            analyzing.close()
            code = publisher.stop()
            if code not in (0, None):
                result.notes.append(f"receiver publish exited with {code}")
            if publisher.errors():
                result.notes.append(f"receiver publish logged:\n{publisher.errors()}")
        if subscriber is not None:
            _, ids = subscriber.finish()
            result.arrived, result.distinct = len(ids), len(set(ids))
    return result


def drain_baseline(ctx: Ctx, sink: str) -> Drain:
    args = ctx.args
    with ctx.db(f"bench_procrastinate_{sink}") as url:
        log(f"procrastinate -> {sink}: applying its schema")
        env = ctx.baseline_env(url)
        subscriber: Subscriber | None = None
        stream = ""
        if sink == "http":
            subscriber = Subscriber(ctx.tmp, f"baseline-{sink}")
            env["BENCH_SUBSCRIBER_URL"] = subscriber.url
        else:
            assert ctx.nats is not None
            stream, prefix = ctx.stream()
            ctx.stack.callback(ctx.nats.delete_stream, stream)
            env.update(BENCH_NATS_URL=args.nats_url, BENCH_NATS_STREAM=stream, BENCH_NATS_PREFIX=prefix)
        run_cli([sys.executable, str(BASELINE), "schema"], env, "procrastinate schema")
        log(f"procrastinate -> {sink}: deferring {args.events:,} tasks (batch_defer_async)")
        started = time.monotonic()
        run_cli(
            [sys.executable, str(BASELINE), "seed", "--events", str(args.events), "--task", sink, "--nonce", ctx.nonce],
            env,
            "procrastinate seed",
            timeout=1800,
        )
        seed_s = time.monotonic() - started
        body = float(query_one(url, "SELECT avg(octet_length((args -> 'event')::text)) FROM procrastinate_jobs") or 0)
        tidy(url)
        result = Drain("procrastinate", sink, args.events, seed_s, body, ctx.baseline_settings)
        log(f"procrastinate -> {sink}: {args.events:,} tasks in {seed_s:.1f} s; starting the worker")
        analyzing = ctx.stack.enter_context(contextlib.ExitStack())
        analyzing.enter_context(periodic_analyze(url, "procrastinate_jobs", args.analyze_every))
        worker = ctx.workers(env, sink)
        try:
            if subscriber is not None:
                sub = subscriber

                def sink_count() -> tuple[int, float | None, float | None]:
                    s = sub.stats()
                    return int(s["count"]), s["first"], s["last"]

                groups = lambda: {  # noqa: E731
                    "publisher": worker.pids,
                    "subscriber": {sub.proc.pid},
                    "postgres": postgres_pids(url),
                }
            else:
                nats = ctx.nats
                assert nats is not None

                def sink_count() -> tuple[int, float | None, float | None]:
                    return nats.stream_state(stream)

                groups = lambda: {  # noqa: E731
                    "publisher": worker.pids,
                    "nats-server": pids_named("nats-server"),
                    "postgres": postgres_pids(url),
                }
            wait_drain(
                ctx,
                result,
                worker,
                sink_count,
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
                url,
                groups,
            )
            result.failed = int(
                query_one(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed' OR attempts > 1") or 0
            )
        finally:
            analyzing.close()
            code = worker.stop()
            if code not in (0, None):
                result.notes.append(f"procrastinate worker exited with {code}")
            if worker.errors():
                result.notes.append(f"procrastinate worker logged:\n{worker.errors()}")
        if subscriber is not None:
            _, ids = subscriber.finish()
            result.arrived, result.distinct = len(ids), len(set(ids))
    return result


# ------------------------------------------------------------------------ end to end


def e2e(ctx: Ctx, system: str, bodies: Path) -> Latency:
    args = ctx.args
    name = "bench_publish_e2e" if system == "receiver" else "bench_procrastinate_e2e"
    with ctx.db(name) as url:
        subscriber = Subscriber(ctx.tmp, f"{system}-e2e")
        port = free_port()
        if system == "receiver":
            log("receiver end-to-end: receiver migrate, subscribers add, publish, serve")
            migrate(ctx, url)
            add_subscriber(ctx, url, subscriber.url)
            env = ctx.receiver_env(url, RECEIVER_PORT=str(port))
            worker: Proc | Procs = Proc(
                "receiver publish (e2e)", ctx.publisher_argv(), env, ctx.tmp / "publish-e2e.log"
            )
            server = Proc(
                "receiver serve (e2e)",
                [sys.executable, "-m", "receiver", "serve", "--port", str(port)],
                env,
                ctx.tmp / "serve-e2e.log",
            )
            result = Latency(system, ctx.receiver_settings + "; receiver serve with default settings")
            ready_sql = (
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'doitong-receiver-listen'"
                " AND datname = current_database()"
            )
        else:
            log("procrastinate end-to-end: schema, worker, ingest app")
            env = ctx.baseline_env(url, BENCH_SUBSCRIBER_URL=subscriber.url)
            run_cli([sys.executable, str(BASELINE), "schema"], env, "procrastinate schema")
            # The ingest app's pool is the receiver's (RECEIVER_DB_POOL_SIZE 16); the worker's is --baseline-pool.
            serve_env = {**env, "BENCH_PROCRASTINATE_POOL": "16"}
            worker = ctx.workers(env, "e2e")
            server = Proc(
                "procrastinate ingest app (e2e)",
                [sys.executable, str(BASELINE), "serve", "--port", str(port), "--task", "http"],
                serve_env,
                ctx.tmp / "baseline-serve-e2e.log",
            )
            result = Latency(
                system,
                ctx.baseline_settings + "; ingest: uvicorn (uvloop, httptools), one transaction: insert + defer",
            )
            ready_sql = "SELECT count(*) FROM procrastinate_workers"
        try:
            wait_http(port, "/readyz", server)
            wait_sql(url, ready_sql, worker, "the worker's database connection", timeout=60)
            time.sleep(1.0)
            out = ctx.tmp / f"load-{system}.json"
            total = args.warmup + args.duration
            log(f"{system} end-to-end: {args.rate:g} webhooks/s for {args.warmup:g} s warm-up + {args.duration:g} s")
            load = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "_load",
                    "--port",
                    str(port),
                    "--bodies",
                    str(bodies),
                    "--rate",
                    str(args.rate),
                    "--out",
                    str(out),
                ],
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            _loads.add(load)
            try:
                probe: CpuProbe | None = None
                # The load generator reads its bodies first (well under a second), then 0.1 s.
                time.sleep(args.warmup + 0.5)
                if CpuProbe.available() and args.duration >= 3:
                    probe = CpuProbe(
                        {
                            "ingest": {server.pid},
                            "publisher": worker.pids,
                            "subscriber": {subscriber.proc.pid},
                            "load gen": {load.pid},
                            "postgres": postgres_pids(url),
                        }
                    )
                    time.sleep(args.duration - 1.0)
                    result.cpu = probe.finish()
                output, _ = load.communicate(timeout=total + 120)
            except BaseException:
                load.kill()
                load.wait()
                raise
            finally:
                _loads.discard(load)
            if load.returncode != 0:
                raise BenchError(f"the load generator exited with {load.returncode}:\n{output}")
            records = orjson.loads(out.read_bytes())
            accepted = sum(1 for e in records["event_ids"] if e)
            deadline = time.monotonic() + 30
            while subscriber.stats()["distinct"] < accepted and time.monotonic() < deadline:
                worker.check()
                time.sleep(0.1)
        finally:
            server.stop()
            code = worker.stop()
            if code not in (0, None):
                result.notes.append(f"{worker.name} exited with {code}")
            for proc in (server, worker):
                if proc.errors():
                    result.notes.append(f"{proc.name} logged:\n{proc.errors()}")
        times, ids = subscriber.finish()
    arrival: dict[str, float] = {}
    for moment, event_id in zip(times, ids, strict=True):
        arrival.setdefault(event_id, moment)  # the first arrival counts
    start: float = records["start"]
    warm_until = start + args.warmup
    answers: list[float] = []
    latencies: list[float] = []
    in_order: list[float] = []  # by schedule, for the trend
    for i, event_id in enumerate(records["event_ids"]):
        scheduled = start + i / args.rate
        if scheduled < warm_until:
            continue
        result.sent += 1
        code = records["status"][i]
        if code == 0:
            continue
        if 200 <= code < 300:
            result.ok += 1
            answers.append((records["done"][i] - records["sent"][i]) * 1000)
        else:
            result.non_2xx += 1
        if not event_id:
            continue
        result.accepted += 1
        if event_id in arrival:
            result.matched += 1
            latencies.append((arrival[event_id] - records["done"][i]) * 1000)
            in_order.append(latencies[-1])
        else:
            result.missing += 1
    result.errors = records["errors"]
    result.seconds = args.duration
    result.max_late_ms = records["max_late_ms"]
    result.answer = sorted(answers)
    result.e2e = sorted(latencies)
    quarter = max(1, len(in_order) // 4)
    if in_order:
        result.trend = (
            percentile(sorted(in_order[:quarter]), 50),
            percentile(sorted(in_order[-quarter:]), 50),
        )
    if args.keep_records is not None:
        args.keep_records.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "i": i,
                "scheduled": start + i / args.rate,
                "sent": records["sent"][i],
                "answered": records["done"][i],
                "status": records["status"][i],
                "event_id": event_id,
                "arrived": arrival.get(event_id) if event_id else None,
            }
            for i, event_id in enumerate(records["event_ids"])
        ]
        (args.keep_records / f"e2e-{system}.json").write_bytes(orjson.dumps(rows))
    if result.accepted < result.sent:
        result.notes.append(f"{result.sent - result.accepted} webhooks were not accepted with an event id")
    return result


_loads: set[subprocess.Popen[str]] = set()


# ---------------------------------------------------------------------------- report


def report(ctx: Ctx, drains: dict[tuple[str, str], Drain], latencies: dict[str, Latency]) -> int:
    args = ctx.args
    print()
    if drains:
        print(f"drain: {args.events:,} pending events, one subscriber")
        header = (
            f"{'system':<14} {'sink':<5} {'events/s':>9} {'sink ev/s':>9} {'seconds':>8} {'done':>8} "
            f"{'arrived':>8} {'distinct':>8} {'retried':>7} {'body B':>6} {'seed s':>6}"
        )
        print(header)
        print("-" * len(header))
        for d in drains.values():
            span = (d.done_at - d.first) if d.done_at is not None and d.first is not None else float("nan")
            print(
                f"{d.system:<14} {d.sink:<5} {d.rate:>9,.0f} {d.sink_rate:>9,.0f} {span:>8.2f} {d.done:>8,} "
                f"{d.arrived:>8,} {'-' if d.distinct is None else f'{d.distinct:,}':>8} {d.failed:>7,} "
                f"{d.body_bytes:>6.0f} {d.seed_s:>6.1f}"
            )
        print(
            "(events/s: events / (all done in the database - first arrival at the sink); sink ev/s: arrivals / "
            "(last - first arrival); distinct: event ids the HTTP subscriber saw; retried: deliveries that took "
            "more than one attempt or died; body B: mean event size)"
        )
    if latencies:
        print(f"\nend to end: {args.rate:g} webhooks/s for {args.duration:g} s (after {args.warmup:g} s warm-up)")
        header = (
            f"{'system':<14} {'sent':>6} {'2xx':>6} {'errors':>6} {'matched':>7} {'missing':>7} "
            f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'min ms':>7} "
            f"{'answer p50':>10} {'answer p99':>10} {'late ms':>7}"
        )
        print(header)
        print("-" * len(header))
        for r in latencies.values():
            print(
                f"{r.system:<14} {r.sent:>6,} {r.ok:>6,} {r.non_2xx + r.errors:>6,} {r.matched:>7,} {r.missing:>7,} "
                f"{r.p(50):>7.2f} {r.p(90):>7.2f} {r.p(99):>7.2f} {(r.e2e[-1] if r.e2e else float('nan')):>7.2f} "
                f"{(r.e2e[0] if r.e2e else float('nan')):>7.2f} {percentile(r.answer, 50):>10.2f} "
                f"{percentile(r.answer, 99):>10.2f} {r.max_late_ms:>7.1f}"
            )
        print(
            "(p50..min: subscriber arrival - the webhook's 2xx at the load generator, same event id, CLOCK_MONOTONIC; "
            "a negative min means the event reached the subscriber before the load generator read the 2xx; "
            "answer: the webhook's own answer time; late ms: worst lag of a send behind its schedule)"
        )

    cpu_rows = [(f"{d.system} -> {d.sink}", d.cpu) for d in drains.values() if d.cpu]
    cpu_rows += [(f"{r.system} e2e", r.cpu) for r in latencies.values() if r.cpu]
    if cpu_rows:
        cores = os.cpu_count() or 0
        print(f"\nCPU while measuring, in cores busy (this machine has {cores})")
        names = ["publisher", "ingest", "subscriber", "nats-server", "load gen", "postgres", "irq", "other", "idle"]
        print(f"{'measurement':<24}" + "".join(f" {n:>11}" for n in names))
        for label, cpu in cpu_rows:
            assert cpu is not None
            print(f"{label:<24}" + "".join(f" {cpu[n]:>11.2f}" if n in cpu else f" {'-':>11}" for n in names))
        print(
            "(publisher: `receiver publish` or the procrastinate worker; drains: from the first arrival to all "
            "done; end to end: the measured window; postgres: the bench database's backends and the server's own "
            "processes; other: every other task: a busy one means the figures are disturbed)"
        )

    # Side by side.
    figures: list[tuple[str, float | None, float | None, bool, str, Callable[[float], bool]]] = []

    def drain_rate(system: str, sink: str) -> float | None:
        d = drains.get((system, sink))
        return d.rate if d else None

    def lat(system: str, q: float) -> float | None:
        r = latencies.get(system)
        return r.p(q) if r and r.e2e else None

    if ("receiver", "http") in drains or ("procrastinate", "http") in drains:
        figures.append(
            (
                "drain to HTTP, events/s",
                drain_rate("receiver", "http"),
                drain_rate("procrastinate", "http"),
                True,
                f">= {TARGET_HTTP_PER_S:,.0f}",
                lambda v: v >= TARGET_HTTP_PER_S,
            )
        )
    if ("receiver", "nats") in drains or ("procrastinate", "nats") in drains:
        figures.append(
            (
                "drain to NATS, events/s",
                drain_rate("receiver", "nats"),
                drain_rate("procrastinate", "nats"),
                True,
                f">= {TARGET_NATS_PER_S:,.0f}",
                lambda v: v >= TARGET_NATS_PER_S,
            )
        )
    if latencies:
        figures.append(
            (
                "end-to-end p50, ms",
                lat("receiver", 50),
                lat("procrastinate", 50),
                False,
                f"<= {TARGET_P50_MS:g}",
                lambda v: v <= TARGET_P50_MS,
            )
        )
        figures.append(
            (
                "end-to-end p99, ms",
                lat("receiver", 99),
                lat("procrastinate", 99),
                False,
                f"<= {TARGET_P99_MS:g}",
                lambda v: v <= TARGET_P99_MS,
            )
        )

    failures = 0
    print(f"\nreceiver vs. procrastinate (targets written for a 2-core machine; this one has {os.cpu_count()})")
    header = (
        f"{'figure':<26} {'receiver':>10} {'procrastinate':>13} {'ratio':>7}  {'target':<8} {'target':>6} {'ahead':>6}"
    )
    print(header)
    print("-" * len(header))
    for label, rec, base, higher_better, target, meets in figures:
        ratio: float | None = None
        if rec is not None and base is not None and rec > 0 and base > 0:
            ratio = rec / base if higher_better else base / rec
        fmt = "{:>10,.0f}" if higher_better else "{:>10.2f}"
        rec_text = fmt.format(rec) if rec is not None else f"{'-':>10}"
        base_text = (fmt.format(base) if base is not None else f"{'-':>10}").rjust(13)
        target_ok = meets(rec) if rec is not None else None
        ahead = (rec > base if higher_better else rec < base) if rec is not None and base is not None else None
        for verdict in (target_ok, ahead):
            failures += verdict is False
        print(
            f"{label:<26} {rec_text} {base_text} {(f'{ratio:.2f}x' if ratio else '-'):>7}  {target:<8} "
            f"{_verdict(target_ok):>6} {_verdict(ahead):>6}"
        )
    print(
        "(ratio > 1: the receiver is ahead (rates: receiver / procrastinate; latencies: procrastinate / receiver); "
        "target: the receiver's figure against the target; ahead: the receiver's figure against procrastinate's)"
    )
    incomplete = [d for d in drains.values() if not d.complete]
    if incomplete:
        failures += 1

    print("\nsettings")
    print(f"  receiver      : {ctx.receiver_settings}")
    print(f"  procrastinate : {ctx.baseline_settings}")

    print("\nchecks")
    for d in drains.values():
        problems = []
        if not d.complete:
            problems.append(f"{d.done:,} of {d.events:,} done")
        if d.distinct is not None and d.distinct < d.events:
            problems.append(f"the subscriber saw {d.distinct:,} distinct events of {d.events:,}")
        if d.failed:
            problems.append(f"{d.failed:,} deliveries needed a retry or died")
        if d.cpu and d.cpu.get("other", 0) > 0.2:
            problems.append(f"other processes used {d.cpu['other']:.2f} cores meanwhile")
        if d.cpu and d.cpu.get("subscriber", 0) > 0.6:
            problems.append(f"the subscriber used {d.cpu['subscriber']:.2f} cores: it may be a bottleneck")
        dup = d.arrived - (d.distinct if d.distinct is not None else d.arrived)
        outcome = "ok" if not problems else "PROBLEM: " + "; ".join(problems)
        print(
            f"  {d.system + ' -> ' + d.sink:<22} every event delivered once, none retried "
            f"({d.arrived:,} arrivals, {dup:,} duplicates): {outcome}"
        )
        for note in d.notes:
            print("  " + note)
    for r in latencies.values():
        problems = []
        if r.non_2xx or r.errors:
            problems.append(f"{r.non_2xx} non-2xx answers, {r.errors} connection errors")
        if r.missing:
            problems.append(f"{r.missing} accepted events never reached the subscriber (30 s)")
        early, late = r.trend
        if late > max(2 * early, early + 50):
            problems.append(
                f"the latency grew from {early:,.0f} ms (median, first quarter) to {late:,.0f} ms (last quarter): "
                f"the {r.system} side does not keep up with {args.rate:g}/s, a backlog builds"
            )
        if r.max_late_ms > 50:
            problems.append(f"the load generator fell {r.max_late_ms:.0f} ms behind its schedule")
        if r.cpu and r.cpu.get("other", 0) > 0.2:
            problems.append(f"other processes used {r.cpu['other']:.2f} cores meanwhile")
        print(
            f"  {r.system + ' e2e':<22} every 2xx matched at the subscriber ({r.matched:,} of {r.accepted:,}): "
            f"{'ok' if not problems else 'PROBLEM: ' + '; '.join(problems)}"
        )
        for note in r.notes:
            print("  " + note)
    return 1 if (args.strict and failures) else 0


def _verdict(value: bool | None) -> str:
    return "-" if value is None else ("PASS" if value else "FAIL")


# ------------------------------------------------------------------------------- run


def code_version() -> str:
    """The commit measured, and whether receiver/ or migrations/ had uncommitted changes."""
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "receiver", "migrations"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not head:
        return "unknown (no git)"
    if not dirty:
        return f"git {head}"
    files = ", ".join(line[3:] for line in dirty[:6]) + (", ..." if len(dirty) > 6 else "")
    return f"git {head} + uncommitted changes in {len(dirty)} file(s): {files}"


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    cores = os.cpu_count() or 0
    admin_url = args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_ADMIN_URL
    try:
        pg_version = query_one(admin_url, "SHOW server_version")
    except psycopg.Error as exc:
        raise BenchError(f"cannot connect to {redact(admin_url)}: {exc}") from None
    if "baseline" in args.only:
        try:
            import procrastinate  # noqa: F401
        except ImportError:
            raise BenchError(
                "procrastinate is not installed: .venv/bin/pip install procrastinate (or use --only receiver)"
            ) from None
    nats: Nats | None = None
    if "nats" in args.figures:
        try:
            nats = Nats(args.nats_url)
        except Exception as exc:
            raise BenchError(f"cannot connect to NATS at {args.nats_url}: {exc} (or use --skip-nats)") from None
        stack.callback(nats.close)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-publish-")))
    ctx = Ctx(
        args=args,
        stack=stack,
        admin_url=admin_url,
        tmp=tmp,
        webhook_secret="whsec_bench_" + secrets.token_urlsafe(18),
        subscriber_secret=new_whsec(),
        master_key=master_key(),
        nonce=secrets.token_hex(4),
        nats=nats,
    )
    systems = [("receiver", "receiver"), ("baseline", "procrastinate")]
    print("doitong-receiver publish benchmark", flush=True)
    print(f"  cores        : {cores} (usable by this process: {len(os.sched_getaffinity(0))})")
    print(f"  load average : {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min, before the run)")
    print(f"  python       : {platform.python_version()}; {versions(PACKAGES)}")
    print(f"  receiver     : {code_version()}")
    print(f"  postgresql   : {pg_version} ({redact(admin_url)})")
    print(f"  nats         : {args.nats_url if nats else 'skipped'}")
    autovacuum = query_one(admin_url, "SHOW autovacuum")
    if autovacuum != "on":
        print(f"  autovacuum   : {autovacuum} on this server (the bench ANALYZEs tables with rows after seeding)")
    if args.receiver_sql is not None:
        print(f"  what-if      : {args.receiver_sql} applied after `receiver migrate`: NOT the receiver as shipped")
    if args.analyze_every > 0:
        print(
            f"  what-if      : ANALYZE deliveries / procrastinate_jobs every {args.analyze_every:g} s during the "
            "drains (the bench does it, not the systems measured)"
        )
    print(
        f"  run          : drains of {args.events:,} events ({', '.join(f for f in args.figures if f != 'e2e')}); "
        f"end to end {args.rate:g}/s for {args.warmup:g}+{args.duration:g} s; systems: "
        + ", ".join(label for key, label in systems if key in args.only),
        flush=True,
    )

    drains: dict[tuple[str, str], Drain] = {}
    latencies: dict[str, Latency] = {}
    for sink in ("http", "nats"):
        if sink not in args.figures:
            continue
        for key, label in systems:
            if key not in args.only:
                continue
            d = drain_receiver(ctx, sink) if key == "receiver" else drain_baseline(ctx, sink)
            drains[(label, sink)] = d
            log(f"{label} -> {sink}: {d.rate:,.0f} events/s ({d.done:,} done)")
            time.sleep(1.0)
    if "e2e" in args.figures:
        bodies = tmp / "bodies.txt"
        count = int(args.rate * (args.warmup + args.duration))
        make_bodies(bodies, count, nonce=ctx.nonce, secret=ctx.webhook_secret)
        for key, label in systems:
            if key not in args.only:
                continue
            r = e2e(ctx, label, bodies)
            latencies[label] = r
            log(f"{label} end-to-end: p50 {r.p(50):.2f} ms, p99 {r.p(99):.2f} ms ({r.matched:,} matched)")
            time.sleep(1.0)
    print(f"\n  load average : {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min, after the run)")
    return report(ctx, drains, latencies)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_subscriber"]:
        return subscriber_main(argv[1:])
    if argv[:1] == ["_load"]:
        return load_main(argv[1:])
    parser = argparse.ArgumentParser(
        description="receiver publish vs. a procrastinate baseline: drain rates and end-to-end latency "
        "(see the module docstring)."
    )
    parser.add_argument("--events", type=int, default=100_000, help="pending events per drain (default 100000)")
    parser.add_argument("--rate", type=float, default=500.0, help="webhooks/s for the end-to-end run (default 500)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds end to end (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before that (default 2)")
    parser.add_argument(
        "--only",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=["receiver", "baseline"],
        help="receiver, baseline or both (default receiver,baseline)",
    )
    parser.add_argument(
        "--figures",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=["http", "nats", "e2e"],
        help="which measurements: http, nats, e2e (default all)",
    )
    parser.add_argument("--skip-nats", action="store_true", help="leave out the NATS drain")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="sends in flight: `receiver publish --concurrency` and the procrastinate worker's (default 64)",
    )
    parser.add_argument(
        "--subscriber-concurrency",
        type=int,
        default=64,
        help="RECEIVER_SUBSCRIBER_CONCURRENCY for the receiver (default 64: one subscriber may use every slot)",
    )
    parser.add_argument(
        "--baseline-pool",
        type=int,
        default=4,
        help="each procrastinate worker's PsycopgConnector pool (default 4, psycopg_pool's own default; "
        "16 and 32 measured slower)",
    )
    parser.add_argument(
        "--baseline-workers",
        type=int,
        default=1,
        help="procrastinate worker processes, each with --concurrency (default 1, like one `receiver publish`)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="give up a drain after this many seconds (default 300)"
    )
    parser.add_argument(
        "--database-url",
        help=f"admin URL of the PostgreSQL server (default: $DATABASE_URL, else {DEFAULT_ADMIN_URL})",
    )
    parser.add_argument(
        "--nats-url", default=DEFAULT_NATS_URL, help=f"NATS with JetStream (default {DEFAULT_NATS_URL})"
    )
    parser.add_argument(
        "--receiver-sql",
        type=Path,
        help="what-if experiments: an SQL file run in each receiver database after `receiver migrate` "
        "(e.g. a changed index); the figures are then not those of the receiver as shipped",
    )
    parser.add_argument(
        "--analyze-every",
        type=float,
        default=0.0,
        help="what-if: ANALYZE the queue table (deliveries / procrastinate_jobs) every S seconds during the drains, "
        "as a prompt autovacuum would (default 0: never)",
    )
    parser.add_argument(
        "--keep-records",
        type=Path,
        help="write every end-to-end request (scheduled, sent, answered, arrived; monotonic s) to DIR/e2e-*.json",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    if not args.only or any(x not in ("receiver", "baseline") for x in args.only):
        parser.error("--only: receiver, baseline or both")
    if any(x not in ("http", "nats", "e2e") for x in args.figures):
        parser.error("--figures: http, nats, e2e")
    if args.skip_nats:
        args.figures = [f for f in args.figures if f != "nats"]
    if args.events < 1 or args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.concurrency < 1:
        parser.error("--events, --rate, --duration and --concurrency must be positive")

    def cleanup() -> None:
        for load in list(_loads):
            with contextlib.suppress(OSError):
                load.kill()
        for proc in list(_procs):
            proc.kill()

    return run_main("publish.py", run, args, cleanup)


if __name__ == "__main__":
    raise SystemExit(main())
