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
       --duration s at --connections with `wrk -t2 --latency` (_wrk.lua
       cycles through the bodies and prints exact percentiles from wrk's latency
       histogram). Without wrk on PATH, a Python load generator in a separate
       process (_pyload.py closed) does the same (closed loop, keep-alive, one request in flight per
       connection); the output says which one was used.
    4. Counts the rows that landed in the inbound table (each 2xx must be one
       new row, not a duplicate), stops the server (SIGTERM), drops the databases.

It prints req/s, accepted/s, p50/p90/p99/max, non-2xx answers and socket errors
for both, the ratio, the targets with PASS/FAIL, and the machine's cores.
Targets (2-core machine): >= 3,000 accepted webhooks/s, p99 <= 25 ms, and
>= 0.7 of the baseline's req/s. Exit status 0 when the measurement completed
(1 with --strict when a target failed), 2 when it could not run.

    .venv/bin/python bench/ingest.py [--duration 20] [--connections 32]

Tracing (#12)
    --otel adds `receiver+otel`: the same receiver with OTEL_EXPORTER_OTLP_ENDPOINT set to a
    local OTLP/HTTP sink that discards (_otlp_sink.py) and every request sampled, and prints
    what tracing costs. --compare-tree DIR adds `before`: the receiver of another checkout
    (e.g. `git worktree add /tmp/before <rev>`), run from that tree, so a change's cost with
    tracing off is measured in the same run; each gets its own database, all migrated by this
    checkout (older code runs on a newer schema, as in a rolling deploy). The apps take turns
    in every round: use --rounds 3 or more and read the medians.

Everything it starts (servers, load generator, embedded PostgreSQL) and every
database it creates is removed at the end, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _bodies
import _cpu
import _databases
import _ingest_report
import _load
import _otlp_sink
import _processes
import _report
import _run

BENCH_DIR = Path(__file__).resolve().parent
PACKAGES = ("uvicorn", "starlette", "psycopg", "uvloop", "httptools", "orjson")  # versions printed in the header
BASELINE_APP = BENCH_DIR / "baseline_app.py"


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
    use_wrk: bool,
) -> _ingest_report.Measured:
    port = _processes.free_port()
    argv = [*target.argv, "--port", str(port)]
    logfile = tmp / f"{target.name}-{round_no}.log"

    def load(bodies: Path, seconds: float, during: _processes.During | None = None) -> _load.LoadResult:
        if use_wrk:
            return _load.run_wrk(args, port, bodies, seconds, during)
        return _load.run_python(args, port, bodies, seconds, during)

    cpu: list[_ingest_report.CpuShare] = []

    def probe_cpu(loadgen_pid: int) -> None:
        """Sample the CPU in a window that skips the load generator's start-up (it loads
        and formats the bodies first, ~1 s) and ends before the load does."""
        if not _cpu.CpuProbe.available() or args.duration < 4:
            return
        lead = 1.5
        time.sleep(lead)
        probe = _cpu.CpuProbe(
            {
                "server": _cpu.descendants(server.pid),
                "postgres": _cpu.postgres_pids(target.database_url),
                "loadgen": {loadgen_pid},
            }
        )
        time.sleep(args.duration - lead - 0.5)
        cpu.append(_ingest_report.CpuShare(seconds=time.monotonic() - probe.started, **probe.finish()))

    _run.log(f"{target.name}: starting on port {port}")
    server = _processes.Proc(target.name, argv, target.env, logfile)
    try:
        _processes.wait_http(port, "/readyz", server)
        if args.warmup > 0:
            _run.log(f"{target.name}: warm-up {args.warmup:g} s")
            load(warmup_bodies, args.warmup)
        _databases.checkpoint(target.database_url)
        time.sleep(0.5)
        rows_before = _databases.query_one(target.database_url, target.rows_sql)
        _run.log(f"{target.name}: measuring {args.duration:g} s at {args.connections} connections")
        result = load(main_bodies, args.duration, probe_cpu)
        time.sleep(0.5)  # let the last in-flight transactions commit
        rows_after = _databases.query_one(target.database_url, target.rows_sql)
        duplicates = _databases.query_one(target.database_url, target.duplicates_sql) if target.duplicates_sql else None
    except BaseException:
        tail = server.tail()
        server.stop(timeout=20)
        if tail:
            print(f"{target.name} _run.log (last lines):\n{tail}", file=sys.stderr)
        raise
    server.stop(timeout=20)
    measured = _ingest_report.Measured(
        target.name, round_no, result, rows_before, rows_after, duplicates, cpu[0] if cpu else None
    )
    _run.log(
        f"{target.name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"{measured.new_rows:,} new rows"
    )
    if "Traceback" in server.tail(200) or " ERROR " in server.tail(200):
        measured.notes.append(f"{target.name} logged errors, see below:\n{server.tail(15)}")
    return measured


def run(args: argparse.Namespace, stack: contextlib.ExitStack[bool | None]) -> int:
    cores = os.cpu_count() or 0
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk") is not None)
    if args.loadgen == "wrk" and shutil.which("wrk") is None:
        raise _run.BenchError("--loadgen wrk: wrk is not on PATH (apt-get install wrk)")
    tool = (
        f"{_load.wrk_version()} (-t{args.threads} -c{args.connections} --latency, Lua script)"
        if use_wrk
        else f"Python asyncio raw-socket generator, 1 process, {args.connections} connections "
        "(wrk not on PATH: apt-get install wrk for sharper figures)"
    )

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-")))
    secret = _bodies.webhook_secret()

    admin_url, where = _databases.server(args.database_url, embedded=args.embedded, home=tmp / "embedded", stack=stack)
    pg_version = _databases.query_one(admin_url, "SHOW server_version")

    _report.print_machine("doitong-receiver ingest benchmark", PACKAGES)
    print(f"  postgresql   : {pg_version} ({where}, {_databases.redact(admin_url)})")
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
        warmup_jobs = range(first, first + warmup_count)
        main_jobs = range(first + warmup_count, first + warmup_count + args.bodies)
        _bodies.write(warmup_bodies, (_bodies.ingest_document(i, nonce) for i in warmup_jobs), secret)
        mean_size = _bodies.write(main_bodies, (_bodies.ingest_document(i, nonce) for i in main_jobs), secret)
        first += warmup_count + args.bodies
        bodies.append((warmup_bodies, main_bodies))
    print(
        f"  bodies       : {args.bodies:,} distinct jobs pre-signed per run (+{warmup_count:,} for the warm-up), "
        f"mean {mean_size:.0f} bytes ({time.perf_counter() - started:.1f} s to make)",
        flush=True,
    )
    pid = os.getpid()
    targets: dict[str, Target] = {}
    if "baseline" in args.only:
        url = stack.enter_context(_databases.database(admin_url, f"bench_baseline_{pid}"))
        targets["baseline"] = Target(
            "baseline",
            [sys.executable, str(BASELINE_APP), "--pool", str(args.pool), "--workers", str(args.workers)],
            _processes.child_env(DATABASE_URL=url, DOITONG_WEBHOOK_SECRET=secret),
            url,
            "SELECT count(*) FROM baseline_inbound",
            None,
        )
    if "receiver" in args.only:
        variants: list[tuple[str, Path, dict[str, str]]] = []
        if args.compare_tree is not None:
            variants.append(("before", args.compare_tree, {}))
        variants.append(("receiver", BENCH_DIR.parent, {}))
        if args.otel:
            sink = _otlp_sink.OtlpSink()
            stack.callback(sink.close)
            variants.append(("receiver+otel", BENCH_DIR.parent, sink.env()))
        for number, (name, tree, extra) in enumerate(variants):
            url = stack.enter_context(_databases.database(admin_url, f"bench_ingest_{number}_{pid}"))
            targets[name] = _receiver_target(args, name, url, tree, extra, tmp / f"home-{number}", secret)
        args.only = [n for n in args.only if n != "receiver"] + [name for name, _, _ in variants]

    results: dict[str, list[_ingest_report.Measured]] = {name: [] for name in args.only}
    for round_no, (warmup_bodies, main_bodies) in enumerate(bodies, start=1):
        for name in args.only:
            results[name].append(measure(args, targets[name], round_no, tmp, warmup_bodies, main_bodies, use_wrk))
            time.sleep(1.0)

    return _ingest_report.report(args, results, cores)


def _receiver_target(
    args: argparse.Namespace, name: str, url: str, tree: Path, extra: dict[str, str], home: Path, secret: str
) -> Target:
    """The receiver of checkout `tree` on database `url`, migrated by this checkout. `-P` and
    PYTHONPATH make `python -m receiver` import `tree`'s package, wherever the bench runs from."""
    env = _processes.child_env(
        DATABASE_URL=url,
        DOITONG_WEBHOOK_SECRET=secret,
        RECEIVER_HOME=str(home),
        RECEIVER_MASTER_KEY=_bodies.master_key(),
        RECEIVER_LOG_LEVEL="warning",
        RECEIVER_DB_POOL_SIZE=str(args.pool),
        RECEIVER_WORKERS=str(args.workers),
    )
    _run.log(f"{name}: receiver migrate")
    migrate = subprocess.run(
        [sys.executable, "-P", "-m", "receiver", "migrate"],
        env={**env, "PYTHONPATH": str(BENCH_DIR.parent)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if migrate.returncode != 0:
        raise _run.BenchError(f"receiver migrate failed ({migrate.returncode}):\n{migrate.stdout}{migrate.stderr}")
    if args.receiver_sql is not None:
        _run.log(f"{name}: applying {args.receiver_sql} (what-if experiment: not the receiver as shipped)")
        _databases.execute_file(url, args.receiver_sql)
    return Target(
        name,
        [sys.executable, "-P", "-m", "receiver", "serve"],
        {**env, "PYTHONPATH": str(tree), **extra},
        url,
        "SELECT count(*) FROM inbound_webhooks",
        "SELECT count(*) FROM inbound_webhooks WHERE replay_count > 0",
    )


def main(argv: list[str] | None = None) -> int:
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
        f"(default: $DATABASE_URL, else {_databases.DEFAULT_ADMIN_URL}; embedded PostgreSQL if neither answers)",
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
    parser.add_argument(
        "--otel",
        action="store_true",
        help="also run the receiver with tracing on (every request sampled, exported to a local sink that "
        "discards) and print what it costs",
    )
    parser.add_argument(
        "--compare-tree",
        type=Path,
        help="also run the receiver of this checkout (e.g. a git worktree of the revision before a change) "
        "as `before`, to measure a change in the same run",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    if not args.only or any(name not in ("baseline", "receiver") for name in args.only):
        parser.error("--only: use baseline, receiver or both")
    if args.duration <= 0 or args.connections < 1 or args.threads < 1 or args.rounds < 1:
        parser.error("--duration, --connections, --threads and --rounds must be positive")
    if args.compare_tree is not None and not (args.compare_tree / "receiver" / "__init__.py").is_file():
        parser.error(f"--compare-tree: {args.compare_tree} is not a checkout of doitong-receiver")
    if (args.otel or args.compare_tree is not None) and "receiver" not in args.only:
        parser.error("--otel and --compare-tree compare receivers: keep receiver in --only")
    if args.bodies is not None and args.bodies < args.threads:
        parser.error("--bodies: at least one per wrk thread")
    args.threads = min(args.threads, args.connections)
    if args.bodies is None:
        args.bodies = max(200_000, int(args.duration * 10_000))

    return _run.run_main("ingest.py", run, args, _processes.kill_all)


if __name__ == "__main__":
    raise SystemExit(main())
