"""Ingest throughput and latency of the receiver, next to a minimal baseline, in one run.

What it measures
    Accepted webhooks per second, and the p50/p99 latency of each answer, for
    `POST /webhooks/doitong` with signed ~600-byte Doitong bodies, each for a
    distinct job (so every request is a first delivery: verify, parse, one
    transaction, 200 "accepted"). The same load is sent, in the same run and on
    the same machine, to `bench/baseline_app.py`: a bare ASGI app on uvicorn with
    the same options that verifies the HMAC, parses with orjson and writes the
    same rows (inbound delivery, job upsert, history row, outbox event, with
    indexes like the receiver's) with raw psycopg in a single statement. The
    ratio receiver/baseline is what the receiver's code costs on top of the same
    database work: framework, state machine checks, metrics, logs.

How
    1. Creates fresh databases `bench_baseline_<pid>` and `bench_ingest_<pid>` on
       the server given by --database-url (default: $DATABASE_URL, else
       postgresql://postgres@127.0.0.1:5432/postgres). With no URL given and no
       server there, it starts an embedded PostgreSQL (receiver.core.embedded_postgres).
       The receiver's database is migrated with `receiver migrate`.
    2. Writes pre-signed bodies (`X-Doitong-Signature: sha256=<hex HMAC>`) to a
       temporary directory: one set for the warm-up, one for the measured run.
    3. For the baseline, then the receiver: starts the server as a subprocess
       (`receiver serve`, RECEIVER_LOG_LEVEL=warning, one uvicorn worker), waits
       for GET /readyz 200, warms up (--warmup s), CHECKPOINTs, then drives it for
       --duration s at --connections with `wrk -t2 --latency` (a Lua script
       cycles through the bodies and prints exact percentiles from wrk's latency
       histogram). Without wrk on PATH, a Python load generator in a separate
       process does the same (closed loop, keep-alive, one request in flight per
       connection); the output says which one was used.
    4. Counts the rows that landed in the inbound table (each 2xx must be one
       new row, not a duplicate), stops the server (SIGTERM), drops the databases.

It prints req/s, accepted/s, p50/p90/p99/max, non-2xx answers and socket errors
for both, the ratio, the targets with PASS/FAIL, and the machine's cores.
Targets (2-core machine): >= 3,000 accepted webhooks/s, p99 <= 25 ms, and
>= 0.7 of the baseline's req/s. Exit status 0 when the measurement completed
(1 with --strict when a target failed), 2 when it could not run.

    .venv/bin/python bench/ingest.py [--duration 20] [--connections 32]

Everything it starts (servers, load generator, embedded PostgreSQL) and every
database it creates is removed at the end, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from _common import (
    DEFAULT_ADMIN_URL,
    WEBHOOK_PATH,
    BenchError,
    CpuProbe,
    child_env,
    database,
    descendants,
    free_port,
    log,
    postgres_pids,
    query_one,
    redact,
    run_main,
    signed_requests,
    versions,
)

from receiver.core import embedded_postgres
from receiver.inbound.signatures import sign

BENCH_DIR = Path(__file__).resolve().parent
PACKAGES = ("uvicorn", "starlette", "psycopg", "uvloop", "httptools", "orjson")  # versions printed in the header
BASELINE_APP = BENCH_DIR / "baseline_app.py"

TARGET_ACCEPTED_PER_S = 3000.0
TARGET_P99_MS = 25.0
TARGET_RATIO = 0.7

# wrk script. Each wrk thread loads every n-th line ("sha256=<hex> <body>") of the
# body file, pre-formats the requests once and cycles through them; `done` prints
# one machine-readable line with exact percentiles (wrk's histogram, microseconds).
WRK_LUA = r"""
local thread_count = 0
local threads = {}

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads, url_path = args[1], tonumber(args[2]), args[3]
  requests = {}
  nreq, idx, wrapped = 0, 0, 0
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      local sp = line:find(" ", 1, true)
      nreq = nreq + 1
      requests[nreq] = wrk.format("POST", url_path, {
        ["Content-Type"] = "application/json",
        ["X-Doitong-Signature"] = line:sub(1, sp - 1),
      }, line:sub(sp + 1))
    end
    i = i + 1
  end
end

function request()
  idx = idx + 1
  if idx > nreq then
    idx = 1
    wrapped = wrapped + 1
  end
  return requests[idx]
end

function done(summary, latency, requests)
  local wraps = 0
  for _, t in ipairs(threads) do
    wraps = wraps + (t:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f wraps=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, wraps))
end
"""


@dataclass
class LoadResult:
    tool: str
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wraps: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


@dataclass
class CpuShare:
    """CPU in a window of the measured run, in cores busy (1.0 = one core all the time)."""

    seconds: float
    server: float
    postgres: float
    loadgen: float
    irq: float
    other: float
    idle: float


@dataclass
class Measured:
    name: str
    round: int
    load: LoadResult
    rows_before: int
    rows_after: int
    duplicates: int | None
    cpu: CpuShare | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok_answers(self) -> int:
        return self.load.requests - self.load.non_2xx

    @property
    def new_rows(self) -> int:
        return self.rows_after - self.rows_before

    @property
    def accepted_per_s(self) -> float:
        accepted = min(self.ok_answers, self.new_rows)
        return accepted / self.load.duration_s if self.load.duration_s else 0.0


# --------------------------------------------------------------------------- setup


def reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def make_bodies(path: Path, count: int, *, first: int, nonce: str, secret: str) -> float:
    """Write `count` signed bodies, one per line: `sha256=<hex> <json>`. Returns the mean body size."""
    base = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    total = 0
    with path.open("wb") as out:
        for i in range(first, first + count):
            job_id = f"hedra-{nonce}-{i:08d}"
            created = base + timedelta(seconds=i % 86_400)
            completed = created + timedelta(seconds=37, milliseconds=i % 1000)
            stamp = created.strftime("%Y%m%dT%H%M%SZ")
            fake_sig = secrets.token_hex(32)
            document = {
                "id": job_id,
                "status": "completed",
                "url": (
                    f"https://cdn.doitong-outputs.example/outputs/hedra/{job_id}/hedra-avatar-1280x720-h264.mp4"
                    "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                    f"&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F{stamp[:8]}%2Fus-east-1%2Fs3%2Faws4_request"
                    f"&X-Amz-Date={stamp}&X-Amz-Expires=604800&X-Amz-SignedHeaders=host"
                    f"&X-Amz-Signature={fake_sig}"
                ),
                "service": "hedra",
                "createdAt": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "completedAt": completed.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "metadata": {"duration": 12.48 + (i % 97) / 10, "width": 1280, "height": 720},
            }
            body = orjson.dumps(document)
            total += len(body)
            out.write(sign(secret, body).encode() + b" " + body + b"\n")
    return total / count if count else 0.0


def checkpoint(url: str) -> None:
    """Flush dirty buffers now rather than in the middle of the next measurement."""
    with contextlib.suppress(psycopg.Error):
        query_one(url, "CHECKPOINT")


# ------------------------------------------------------------------------ processes


class Server:
    """A server subprocess in its own session, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, logfile: Path) -> None:
        self.name, self.argv, self.env, self.port, self.logfile = name, argv, env, port, logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 60.0) -> None:
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _servers.add(self)
        deadline = time.monotonic() + ready_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} before ready:\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                last = f"{response.status} {response.read()[:200]!r}"
                conn.close()
                if response.status == 200:
                    return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise BenchError(f"{self.name} not ready after {ready_timeout:.0f} s (last: {last}):\n{self.tail()}")

    def stop(self) -> None:
        _servers.discard(self)
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    | " + line for line in text[-lines:])


def run_wrk(
    args: argparse.Namespace, port: int, bodies: Path, lua: Path, duration: float, during: During | None = None
) -> LoadResult:
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
        "--",
        str(bodies),
        str(args.threads),
        WEBHOOK_PATH,
    ]
    output = run_child(argv, timeout=duration + 120, during=during)
    return parse_wrk(output)


def parse_wrk(output: str) -> LoadResult:
    match = re.search(r"^BENCH_RESULT (.*)$", output, re.MULTILINE)
    if match:
        v = {k: float(x) for k, x in (kv.split("=") for kv in match.group(1).split())}
        return LoadResult(
            tool="wrk",
            requests=int(v["requests"]),
            duration_s=v["duration_us"] / 1e6,
            non_2xx=int(v["status"]),
            socket_errors=int(v["connect"] + v["read"] + v["write"] + v["timeout"]),
            p50_ms=v["p50_us"] / 1000,
            p90_ms=v["p90_us"] / 1000,
            p99_ms=v["p99_us"] / 1000,
            max_ms=v["max_us"] / 1000,
            wraps=int(v["wraps"]),
        )

    # Fallback: wrk's own --latency text (rounded to its display precision).
    def ms(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]

    try:
        dist = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", output, re.MULTILINE))
        total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", output)
        assert total is not None
        seconds = float(total.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[total.group(3)]
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
        max_ms = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", output)
        return LoadResult(
            tool="wrk",
            requests=int(total.group(1)),
            duration_s=seconds,
            non_2xx=int(non2xx.group(1)) if non2xx else 0,
            socket_errors=sum(int(x) for x in errors.groups()) if errors else 0,
            p50_ms=ms(dist["50"]),
            p90_ms=ms(dist["90"]),
            p99_ms=ms(dist["99"]),
            max_ms=ms(max_ms.group(1)) if max_ms else float("nan"),
        )
    except (AssertionError, KeyError, AttributeError, ValueError):
        raise BenchError(f"could not read wrk's output:\n{output}") from None


def run_python_load(
    args: argparse.Namespace, port: int, bodies: Path, duration: float, during: During | None = None
) -> LoadResult:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_pyload",
        "--port",
        str(port),
        "--bodies-file",
        str(bodies),
        "--connections",
        str(args.connections),
        "--duration",
        str(duration),
    ]
    output = run_child(argv, timeout=duration + 120, during=during)
    match = re.search(r"^BENCH_JSON (.*)$", output, re.MULTILINE)
    if not match:
        raise BenchError(f"the Python load generator printed no result:\n{output}")
    return LoadResult(**json.loads(match.group(1)))


_children: set[subprocess.Popen[str]] = set()
_servers: set[Server] = set()


During = Callable[[int], None]


def run_child(argv: list[str], *, timeout: float, during: During | None = None) -> str:
    """Run a load generator to completion; killed if we are interrupted. `during(pid)` runs
    while it does (the CPU probe)."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _children.add(proc)
    try:
        if during is not None:
            during(proc.pid)
        output, _ = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        _children.discard(proc)
    if proc.returncode != 0:
        raise BenchError(f"{argv[0]} exited with {proc.returncode}:\n{output}")
    return output


# --------------------------------------------------------------- Python load generator


def pyload_main(argv: list[str]) -> int:
    """`ingest.py _pyload …`: closed-loop HTTP/1.1 keep-alive load on raw sockets; prints BENCH_JSON."""
    parser = argparse.ArgumentParser(prog="ingest.py _pyload")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bodies-file", type=Path, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    requests = signed_requests(args.bodies_file, args.port)
    result = asyncio.run(_pyload(args.port, requests, args.connections, args.duration))
    print("BENCH_JSON " + json.dumps(result), flush=True)
    return 0


async def _pyload(port: int, requests: list[bytes], connections: int, duration: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    state = {"next": 0, "non_2xx": 0, "errors": 0, "wraps": 0}
    stop_at = [float("inf")]
    perf = time.perf_counter

    class Client(asyncio.Protocol):
        def __init__(self, finished: asyncio.Future[None]) -> None:
            self.finished = finished
            self.buffer = b""
            self.need = -1
            self.status = 0
            self.sent_at = 0.0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.send()

        def send(self) -> None:
            if perf() >= stop_at[0]:
                self.transport.close()
                return
            i = state["next"]
            state["next"] = i + 1
            if i >= len(requests):
                state["next"], i = 1, 0
                state["wraps"] += 1
            self.sent_at = perf()
            self.transport.write(requests[i])

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                if self.need < 0:
                    end = self.buffer.find(b"\r\n\r\n")
                    if end < 0:
                        return
                    head = self.buffer[:end].decode("latin-1").split("\r\n")
                    self.status = int(head[0].split(" ", 2)[1])
                    length = 0
                    for line in head[1:]:
                        name, _, value = line.partition(":")
                        if name.strip().lower() == "content-length":
                            length = int(value)
                    self.need = end + 4 + length
                if len(self.buffer) < self.need:
                    return
                self.buffer = self.buffer[self.need :]
                self.need = -1
                now = perf()
                if now <= stop_at[0]:
                    latencies.append(now - self.sent_at)
                    if not 200 <= self.status < 400:
                        state["non_2xx"] += 1
                self.send()

        def connection_lost(self, exc: Exception | None) -> None:
            if perf() < stop_at[0]:
                state["errors"] += 1
            if not self.finished.done():
                self.finished.set_result(None)

    started = perf()
    stop_at[0] = started + duration
    finished: list[asyncio.Future[None]] = []
    for _ in range(connections):
        future: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(lambda f=future: Client(f), "127.0.0.1", port)  # type: ignore[misc]
            finished.append(future)
        except OSError:
            state["errors"] += 1
    await asyncio.sleep(max(0.0, stop_at[0] - perf()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*finished), timeout=15)
    elapsed = min(perf(), stop_at[0]) - started
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000

    return {
        "tool": "python",
        "requests": len(latencies),
        "duration_s": elapsed,
        "non_2xx": state["non_2xx"],
        "socket_errors": state["errors"],
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
        "wraps": state["wraps"],
    }


# -------------------------------------------------------------------------- the run


@dataclass
class Target:
    name: str
    argv: list[str]
    env: dict[str, str]
    database_url: str
    rows_sql: str
    duplicates_sql: str | None  # None: the app does not record replays


def measure(
    args: argparse.Namespace,
    target: Target,
    round_no: int,
    tmp: Path,
    warmup_bodies: Path,
    main_bodies: Path,
    lua: Path | None,
) -> Measured:
    port = free_port()
    argv = [*target.argv, "--port", str(port)]
    server = Server(target.name, argv, target.env, port, tmp / f"{target.name}-{round_no}.log")

    def load(bodies: Path, seconds: float, during: During | None = None) -> LoadResult:
        if lua is not None:
            return run_wrk(args, port, bodies, lua, seconds, during)
        return run_python_load(args, port, bodies, seconds, during)

    cpu: list[CpuShare] = []

    def probe_cpu(loadgen_pid: int) -> None:
        """Sample the CPU in a window that skips the load generator's start-up (it loads
        and formats the bodies first, ~1 s) and ends before the load does."""
        if not CpuProbe.available() or server.proc is None or args.duration < 4:
            return
        lead = 1.5
        time.sleep(lead)
        probe = CpuProbe(
            {
                "server": descendants(server.proc.pid),
                "postgres": postgres_pids(target.database_url),
                "loadgen": {loadgen_pid},
            }
        )
        time.sleep(args.duration - lead - 0.5)
        cpu.append(CpuShare(seconds=time.monotonic() - probe.started, **probe.finish()))

    log(f"{target.name}: starting on port {port}")
    try:
        server.start()
        if args.warmup > 0:
            log(f"{target.name}: warm-up {args.warmup:g} s")
            load(warmup_bodies, args.warmup)
        checkpoint(target.database_url)
        time.sleep(0.5)
        rows_before = query_one(target.database_url, target.rows_sql)
        log(f"{target.name}: measuring {args.duration:g} s at {args.connections} connections")
        result = load(main_bodies, args.duration, probe_cpu)
        time.sleep(0.5)  # let the last in-flight transactions commit
        rows_after = query_one(target.database_url, target.rows_sql)
        duplicates = query_one(target.database_url, target.duplicates_sql) if target.duplicates_sql else None
    except BaseException:
        tail = server.tail()
        server.stop()
        if tail:
            print(f"{target.name} log (last lines):\n{tail}", file=sys.stderr)
        raise
    server.stop()
    measured = Measured(target.name, round_no, result, rows_before, rows_after, duplicates, cpu[0] if cpu else None)
    log(
        f"{target.name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"{measured.new_rows:,} new rows"
    )
    if "Traceback" in server.tail(200) or " ERROR " in server.tail(200):
        measured.notes.append(f"{target.name} logged errors, see below:\n{server.tail(15)}")
    return measured


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "wrk"
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    cores = os.cpu_count() or 0
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk") is not None)
    if args.loadgen == "wrk" and shutil.which("wrk") is None:
        raise BenchError("--loadgen wrk: wrk is not on PATH (apt-get install wrk)")
    tool = (
        f"{wrk_version()} (-t{args.threads} -c{args.connections} --latency, Lua script)"
        if use_wrk
        else f"Python asyncio raw-socket generator, 1 process, {args.connections} connections "
        "(wrk not on PATH: apt-get install wrk for sharper figures)"
    )

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-")))
    secret = "whsec_bench_" + secrets.token_urlsafe(18)

    # The database server.
    admin_url = args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_ADMIN_URL
    where = "server"
    if args.embedded or not reachable(admin_url):
        if not args.embedded and (args.database_url or os.environ.get("DATABASE_URL")):
            raise BenchError(f"cannot connect to {admin_url}")
        log(
            "starting an embedded PostgreSQL (receiver.core.embedded_postgres)"
            + ("" if args.embedded else f": none answers at {redact(admin_url)}")
        )

        server, _ = embedded_postgres.start(tmp / "embedded", "postgres")
        stack.callback(_stop_embedded, server)
        admin_url = server.get_uri("postgres")
        where = "embedded"
    pg_version = query_one(admin_url, "SHOW server_version")

    print("doitong-receiver ingest benchmark", flush=True)
    print(f"  cores        : {cores} (usable by this process: {affinity})")
    print(f"  load average : {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min, before the run)")
    print(f"  python       : {platform.python_version()}; {versions(PACKAGES)}")
    print(f"  postgresql   : {pg_version} ({where}, {redact(admin_url)})")
    print(f"  load         : {tool}")
    if args.receiver_sql is not None:
        print(f"  what-if      : {args.receiver_sql} applied to the receiver's database after migrating")
    print(
        f"  run          : {args.warmup:g} s warm-up + {args.duration:g} s measured per app; "
        f"order: {', '.join(args.only)}" + (f", {args.rounds} rounds" if args.rounds > 1 else ""),
        flush=True,
    )

    # Bodies: distinct jobs; each round's warm-up and measurement get their own (both
    # apps use the same ones: their databases are separate).
    nonce = f"{os.getpid():x}{int(time.time()) & 0xFFFFFF:06x}"
    warmup_count = max(20_000, int(args.warmup * 15_000))
    bodies: list[tuple[Path, Path]] = []
    started = time.perf_counter()
    first = 0
    mean_size = 0.0
    for round_no in range(1, args.rounds + 1):
        warmup_bodies, main_bodies = tmp / f"warmup-{round_no}.txt", tmp / f"main-{round_no}.txt"
        make_bodies(warmup_bodies, warmup_count, first=first, nonce=nonce, secret=secret)
        mean_size = make_bodies(main_bodies, args.bodies, first=first + warmup_count, nonce=nonce, secret=secret)
        first += warmup_count + args.bodies
        bodies.append((warmup_bodies, main_bodies))
    print(
        f"  bodies       : {args.bodies:,} distinct jobs pre-signed per run (+{warmup_count:,} for the warm-up), "
        f"mean {mean_size:.0f} bytes ({time.perf_counter() - started:.1f} s to make)",
        flush=True,
    )
    lua: Path | None = None
    if use_wrk:
        lua = tmp / "ingest.lua"
        lua.write_text(WRK_LUA)

    pid = os.getpid()
    targets: dict[str, Target] = {}
    if "baseline" in args.only:
        url = stack.enter_context(database(admin_url, f"bench_baseline_{pid}"))
        targets["baseline"] = Target(
            "baseline",
            [sys.executable, str(BASELINE_APP), "--pool", str(args.pool), "--workers", str(args.workers)],
            child_env(DATABASE_URL=url, DOITONG_WEBHOOK_SECRET=secret),
            url,
            "SELECT count(*) FROM baseline_inbound",
            None,
        )
    if "receiver" in args.only:
        url = stack.enter_context(database(admin_url, f"bench_ingest_{pid}"))
        home = tmp / "receiver-home"
        env = child_env(
            DATABASE_URL=url,
            DOITONG_WEBHOOK_SECRET=secret,
            RECEIVER_HOME=str(home),
            RECEIVER_MASTER_KEY=_master_key(),
            RECEIVER_LOG_LEVEL="warning",
            RECEIVER_DB_POOL_SIZE=str(args.pool),
            RECEIVER_WORKERS=str(args.workers),
        )
        log("receiver: receiver migrate")
        migrate = subprocess.run(
            [sys.executable, "-m", "receiver", "migrate"], env=env, capture_output=True, text=True, timeout=300
        )
        if migrate.returncode != 0:
            raise BenchError(f"receiver migrate failed ({migrate.returncode}):\n{migrate.stdout}{migrate.stderr}")
        if args.receiver_sql is not None:
            log(f"receiver: applying {args.receiver_sql} (what-if experiment: not the receiver as shipped)")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(args.receiver_sql.read_text().encode())
        targets["receiver"] = Target(
            "receiver",
            [sys.executable, "-m", "receiver", "serve"],
            env,
            url,
            "SELECT count(*) FROM inbound_webhooks",
            "SELECT count(*) FROM inbound_webhooks WHERE replay_count > 0",
        )

    results: dict[str, list[Measured]] = {name: [] for name in args.only}
    for round_no, (warmup_bodies, main_bodies) in enumerate(bodies, start=1):
        for name in args.only:
            results[name].append(measure(args, targets[name], round_no, tmp, warmup_bodies, main_bodies, lua))
            time.sleep(1.0)

    return report(args, results, cores)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def report(args: argparse.Namespace, results: dict[str, list[Measured]], cores: int) -> int:
    rounds = args.rounds
    print()
    header = (
        f"{'name':<12} {'req/s':>8} {'accepted/s':>10} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'non-2xx':>7} {'sock err':>8} {'2xx':>8} {'new rows':>8}"
    )
    print(header)
    print("-" * len(header))
    for runs in results.values():
        for m in runs:
            r = m.load
            label = m.name if rounds == 1 else f"{m.name} #{m.round}"
            print(
                f"{label:<12} {r.rps:>8,.0f} {m.accepted_per_s:>10,.0f} {r.p50_ms:>7.2f} {r.p90_ms:>7.2f} "
                f"{r.p99_ms:>7.2f} {r.max_ms:>7.1f} {r.non_2xx:>7,} {r.socket_errors:>8,} {m.ok_answers:>8,} "
                f"{m.new_rows:>8,}"
            )
    if rounds > 1:
        for name, runs in results.items():
            print(
                f"{name + ' med':<12} {median([m.load.rps for m in runs]):>8,.0f} "
                f"{median([m.accepted_per_s for m in runs]):>10,.0f} {median([m.load.p50_ms for m in runs]):>7.2f} "
                f"{median([m.load.p90_ms for m in runs]):>7.2f} {median([m.load.p99_ms for m in runs]):>7.2f}"
            )
    tool = next(iter(results.values()))[0].load.tool
    print(
        f"({tool}; {args.connections} connections, {args.duration:g} s each, {cores} cores; "
        "new rows: rows added to the inbound table while measuring"
        + ("; med: median of the rounds)" if rounds > 1 else ")")
    )

    with_cpu = [m for runs in results.values() for m in runs if m.cpu is not None]
    if with_cpu:
        print(f"\nCPU while measuring, in cores busy (this machine has {cores}); CPU time per request")
        print(
            f"{'name':<12} {'server':>7} {'postgres':>8} {'load gen':>8} {'irq':>5} {'other':>6} {'idle':>6}"
            f" {'server us/req':>14} {'postgres us/req':>16}"
        )
        for m in with_cpu:
            c = m.cpu
            assert c is not None
            label = m.name if rounds == 1 else f"{m.name} #{m.round}"
            per = m.load.rps or float("nan")
            print(
                f"{label:<12} {c.server:>7.2f} {c.postgres:>8.2f} {c.loadgen:>8.2f} {c.irq:>5.2f} {c.other:>6.2f}"
                f" {c.idle:>6.2f}"
                f" {c.server / per * 1e6:>14,.0f} {c.postgres / per * 1e6:>16,.0f}"
            )
        print(
            "(sampled from 1.5 s into the run to 0.5 s before its end; postgres: the bench database's backends "
            "and the server's own processes; irq: interrupts, mostly loopback TCP, and steal; other: every other "
            "task, kernel threads included: a busy one means the figures are disturbed; idle includes I/O wait)"
        )

    failures = 0
    rec, base = results.get("receiver"), results.get("baseline")
    rec_rps = median([m.load.rps for m in rec]) if rec else None
    base_rps = median([m.load.rps for m in base]) if base else None
    ratio = rec_rps / base_rps if rec_rps is not None and base_rps else None
    if ratio is not None:
        print(f"\nratio receiver/baseline (req/s): {ratio:.2f}" + (" (medians)" if rounds > 1 else ""))
    if rec:
        accepted = median([m.accepted_per_s for m in rec])
        p99 = median([m.load.p99_ms for m in rec])
        print(f"\ntargets (written for a 2-core machine; this one has {cores})")
        rows: list[tuple[str, str, bool]] = [
            (
                f"accepted webhooks/s >= {TARGET_ACCEPTED_PER_S:,.0f}",
                f"{accepted:,.0f}",
                accepted >= TARGET_ACCEPTED_PER_S,
            ),
            (f"p99 <= {TARGET_P99_MS:g} ms", f"{p99:.2f} ms", p99 <= TARGET_P99_MS),
        ]
        if ratio is not None:
            rows.append((f"req/s >= {TARGET_RATIO:g} x baseline", f"{ratio:.2f}", ratio >= TARGET_RATIO))
        for label, value, ok in rows:
            failures += not ok
            print(f"  {label:<32} {value:>12}  {'PASS' if ok else 'FAIL'}")

    print("\nchecks")
    for runs in results.values():
        for m in runs:
            r = m.load
            problems = []
            if r.non_2xx or r.socket_errors:
                problems.append(f"{r.non_2xx} non-2xx answers, {r.socket_errors} socket errors")
            if r.wraps or m.duplicates:
                problems.append(
                    f"the bodies ran out and were sent again ({r.wraps} wraps over the threads): "
                    "raise --bodies so that every request is a first delivery"
                )
            # Each 2xx must be a new row; a few more rows than answers are requests in flight at the end.
            if m.new_rows < m.ok_answers or m.new_rows > m.ok_answers + args.connections:
                problems.append(f"{m.new_rows} new rows for {m.ok_answers} 2xx answers")
            if m.cpu is not None and m.cpu.other > 0.2:
                problems.append(f"other processes used {m.cpu.other:.2f} cores meanwhile")
            verdict = "ok" if not problems else "PROBLEM: " + "; ".join(problems)
            label = m.name if rounds == 1 else f"{m.name} #{m.round}"
            print(
                f"  {label:<12} all answers 2xx, each a new stored delivery "
                f"({m.ok_answers:,} answers, {m.new_rows:,} new rows, "
                f"{'n/a' if m.duplicates is None else m.duplicates} replays recorded): {verdict}"
            )
            for note in m.notes:
                print("  " + note)
    return 1 if (args.strict and failures) else 0


def _master_key() -> str:
    import base64

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _stop_embedded(server: Any) -> None:
    for method in ("stop", "cleanup", "shutdown"):
        fn = getattr(server, method, None)
        if callable(fn):
            with contextlib.suppress(Exception):
                fn()
            return


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_pyload"]:
        return pyload_main(argv[1:])
    parser = argparse.ArgumentParser(
        description="Receiver vs. minimal baseline: accepted webhooks/s, p50, p99 (see the module docstring)."
    )
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per app (default 20)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument(
        "--pool",
        type=int,
        default=16,
        help="database connections of each app, the same for both (default 16; RECEIVER_DB_POOL_SIZE)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes of each app, the same for both (default 1; RECEIVER_WORKERS); "
        "--pool is per worker",
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per app (default 3)")
    parser.add_argument(
        "--bodies",
        type=int,
        help="distinct pre-signed bodies per measured run (default: 200000, or 10000 per second of --duration if more)",
    )
    parser.add_argument(
        "--database-url",
        help="an admin URL of the PostgreSQL server to create the bench databases on "
        f"(default: $DATABASE_URL, else {DEFAULT_ADMIN_URL}; embedded PostgreSQL if neither answers)",
    )
    parser.add_argument("--embedded", action="store_true", help="use an embedded PostgreSQL even if a server answers")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto", help="default: wrk if on PATH")
    parser.add_argument(
        "--only",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=["baseline", "receiver"],
        help="comma-separated apps to run, in order (default baseline,receiver)",
    )
    parser.add_argument(
        "--receiver-sql",
        type=Path,
        help="what-if experiments: an SQL file run in the receiver's database after `receiver migrate` "
        "(e.g. a changed receiver_ingest); the figures are then not those of the receiver as shipped",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat baseline+receiver this many times; report medians (default 1)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    if not args.only or any(name not in ("baseline", "receiver") for name in args.only):
        parser.error("--only: use baseline, receiver or both")
    if args.duration <= 0 or args.connections < 1 or args.threads < 1 or args.rounds < 1:
        parser.error("--duration, --connections, --threads and --rounds must be positive")
    if args.bodies is not None and args.bodies < args.threads:
        parser.error("--bodies: at least one per wrk thread")
    args.threads = min(args.threads, args.connections)
    if args.bodies is None:
        args.bodies = max(200_000, int(args.duration * 10_000))

    def cleanup() -> None:
        for proc in list(_children):
            with contextlib.suppress(OSError):
                proc.kill()
        for server in list(_servers):
            server.stop()

    return run_main("ingest.py", run, args, cleanup)


if __name__ == "__main__":
    raise SystemExit(main())
