"""The operator console on real volumes: every page and search timed on a month of a busy receiver,
and what reading the console costs ingest running alongside.

What it measures
    1. p50/p95 of each console page and search (bench/_console_pages.py: the overview; jobs
       newest first, by job id, client reference, status, service, tag, a day's range, a later
       page through the cursor; a busy job's timeline; subscribers and one subscriber; each
       deliveries filter; endpoints), requested --requests times each over a kept-alive
       loopback connection with `Authorization: Bearer`, as one operator would, while nothing
       else runs. The server's own figure (`Server-Timing`) is shown too when the console sends it.
       Targets: every page <= 300 ms p95, the overview <= 500 ms.
    2. Ingest at --rate webhooks/s (open loop, each a new job) into the same server, in turn: with
       nobody on the console; with the console in use (the overview left open, whose live part
       console.js fetches every 5 s, and an operator opening a page every --pause seconds); busy
       (--operators operators opening a page a second each); and with one reader requesting pages
       back to back, the worst case (a closed loop keeps about a core of the two busy by itself).
       --rounds times; medians. Target for each: p99 with / without <= 1.2. The pages are made by
       the server's console process (RECEIVER_CONSOLE_PROCESS=own, as shipped); --console-process
       same makes them in the process that answers webhooks, own on a `receiver serve` of its own,
       as a proxy routing /console/ to other replicas would.

The data (bench/_console_fill.py): 1,000,000 jobs over 30 days (--jobs, --days) with ~3,000,000
job events, ~2,000,000 inbound webhooks and outbox events, ~3,000,000 deliveries over three
subscribers (some dead, some pending) and every delivery attempt, written in set-based SQL on
the server given by --database-url (default: $DATABASE_URL, else the local one) and kept as
the database `bench_console_template`, at migration 0006 (bench/_console_db.py). Later runs
copy it, migrate the copy to head (so the later migrations, 0007's indexes among them, are
timed on these volumes), top it up to now, and measure it; the copy is dropped at the end
(--keep keeps it, --reuse measures a kept one again). --refill makes the template again; it is
made again anyway when the fill or a migration up to 0006 changed.

    .venv/bin/python bench/console.py [--requests 30] [--rate 1000] [--rounds 2] [--refill]

Exit status 0 when the measurement completed (1 with --strict when a target failed), 2 when
it could not run. Everything it starts and the copy it makes are removed at the end, also on
Ctrl-C, SIGTERM or failure; the template stays (DROP DATABASE bench_console_template to free
its ~7 GB).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import _bodies
import _console_db
import _console_http
import _console_ingest
import _console_pages
import _databases
import _processes
import _report
import _run
import psycopg

PACKAGES = ("uvicorn", "starlette", "sqlalchemy", "psycopg")
TOKEN = "bench-console-token-0123456789abcdef"
INGEST_RATIO_TARGET = 1.2


def run(args: argparse.Namespace, stack: contextlib.ExitStack[bool | None]) -> int:
    admin_url = _databases.admin_url(args.database_url)
    if not _databases.reachable(admin_url):
        raise _run.BenchError(f"cannot connect to {_databases.redact(admin_url)} (bench/console.py needs a server)")
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-console-")))
    _report.print_machine("doitong-receiver console benchmark", PACKAGES)
    print(f"  postgresql   : {_databases.query_one(admin_url, 'SHOW server_version')} ({_databases.redact(admin_url)})")
    print(f"  code         : {_report.code_version()}", flush=True)

    if args.reuse:
        url = _databases.with_database(admin_url, args.reuse)
        print(f"  data         : {args.reuse}, as a run with --keep left it")
    else:
        prepared = _prepare(args, admin_url, stack)
        if prepared is None:
            return 0
        url = prepared
    for table, rows, size in _console_db.sizes(url):
        print(f"    {table:<18} {rows:>12,} rows {size / 2**30:>7.2f} GiB")
    _databases.checkpoint(url)

    secret = _bodies.webhook_secret()
    port = _processes.free_port()
    env = _console_db.receiver_env(
        url,
        DOITONG_WEBHOOK_SECRET=secret,
        RECEIVER_CONSOLE_TOKEN=TOKEN,
        # child (the default): the server's console process; same: its pages made by the process
        # that answers webhooks; own: a second receiver serve (below).
        RECEIVER_CONSOLE_PROCESS="same" if args.console_process == "same" else "own",
        RECEIVER_HOME=str(tmp / "home"),
        RECEIVER_PORT=str(port),
    )
    server = _processes.Proc("receiver serve", [sys.executable, "-m", "receiver", "serve"], env, tmp / "serve.log")
    stack.callback(server.stop)
    _processes.wait_http(port, "/readyz", server, timeout=120)
    console = server
    console_port = port
    if args.console_process == "own":
        # The console on a `receiver serve` of its own, as a proxy routing /console/ to its own
        # replicas would have it: its pages never run in the event loop that answers webhooks.
        console_port = _processes.free_port()
        console = _processes.Proc(
            "receiver serve (console)",
            [sys.executable, "-m", "receiver", "serve"],
            {**env, "RECEIVER_PORT": str(console_port)},
            tmp / "serve-console.log",
        )
        stack.callback(console.stop)
        _processes.wait_http(console_port, "/readyz", console, timeout=120)
    samples = _console_pages.samples(url)
    client = _console_http.Client(console_port, TOKEN)
    probe = client.get("/console/")
    if probe.status != 200:
        raise _run.BenchError(f"GET /console/ answered {probe.status}: is the console in this build?\n{server.tail()}")
    pages = _console_pages.resolve(client, _console_pages.pages(samples))

    print(
        f"\nConsole pages: {args.requests} requests each after 2 unmeasured, one client, nothing else running; "
        f"after each page the client pauses {_console_pages.PAUSE_FACTOR:g}x its time, as the console process "
        "paces itself"
    )
    series = _console_pages.time_pages(client, pages, args.requests)
    client.close()
    pages_ok = _console_pages.report(pages, series)

    ingest: dict[str, bool | None] = {}
    if args.rate > 0:
        ingest = _ingest(
            args, url, port, server.pid, console_port, console.pid, secret, tmp, [page.path for page in pages]
        )
    for proc in {server, console}:
        if proc.errors():
            print(f"\n{proc.name} logged:\n{proc.errors()}")

    print("\nTargets")
    print(
        f"  every page p95 <= {_console_pages.PAGE_TARGET_MS:.0f} ms, overview <= "
        f"{_console_pages.OVERVIEW_TARGET_MS:.0f} ms : {_report.verdict(pages_ok)}"
    )
    for label, ok in ingest.items() or {"in use": None}.items():
        print(f"  ingest p99 with the console ({label}) / without <= {INGEST_RATIO_TARGET:g} : {_report.verdict(ok)}")
    if args.keep:
        print(f"\nkept: {_databases.redact(url)}")
    return 1 if args.strict and not (pages_ok and all(ok is not False for ok in ingest.values())) else 0


def _prepare(args: argparse.Namespace, admin_url: str, stack: contextlib.ExitStack[bool | None]) -> str | None:
    """The template (made when missing or out of date), a copy of it migrated to head and topped
    up to now; None with --fill-only."""
    wanted = _console_db.key(args.jobs, args.days)
    record = _console_db.made(admin_url)
    made_now = args.refill or record is None or record.key != wanted
    if made_now:
        why = "--refill" if args.refill else ("none yet" if record is None else f"made from {record.key}, not {wanted}")
        _run.log(f"making the template {_console_db.TEMPLATE} ({why}): {args.jobs:,} jobs over {args.days:g} days")
        record = _console_db.make_template(admin_url, args.jobs, args.days)
    assert record is not None
    if args.fill_only:
        print(f"  template     : {_console_db.TEMPLATE}, filled in {record.fill_seconds:.0f} s")
        return None
    name = f"bench_console_{os.getpid()}"
    _run.log(f"copying the template to {name}")
    started = time.perf_counter()
    url = stack.enter_context(_console_db.copied(admin_url, name, keep=args.keep))
    copy_seconds = time.perf_counter() - started
    started = time.perf_counter()
    _console_db.migrate_copy(url)
    migrate_seconds = time.perf_counter() - started
    topped = _console_db.top_up(url, record, datetime.now(UTC))
    print(
        f"  data         : template {'made now' if made_now else 'reused'}, filled in {record.fill_seconds:.0f} s "
        f"(ends {record.end[:19]}); copied in {copy_seconds:.0f} s, migrated to head in {migrate_seconds:.1f} s, "
        f"topped up with {topped:,} jobs"
    )
    return url


@dataclass(frozen=True)
class Use:
    """How the console is used while ingest is measured."""

    label: str
    what: str
    readers: list[_console_http.Reader]


def _uses(args: argparse.Namespace, paths: list[str]) -> list[Use]:
    """The console in use: an overview left open (its live part every 5 s, as console.js asks)
    and an operator opening a page every --pause seconds; then --operators operators a page a
    second each; then one reader back to back."""
    live = _console_http.Reader([_console_pages.LIVE], 5.0)
    uses = [
        Use(
            "in use",
            f"the overview open (its live part every 5 s) and an operator opening a page every {args.pause:g} s",
            [live, _console_http.Reader(paths, args.pause)],
        )
    ]
    if args.operators:
        uses.append(
            Use(
                "busy",
                f"{args.operators} operators opening a page a second each",
                [_console_http.Reader(paths, 1.0) for _ in range(args.operators)],
            )
        )
    if args.hammer:
        uses.append(Use("hammer", "one reader requesting pages back to back", [_console_http.Reader(paths, 0.0)]))
    return uses


def _ingest(
    args: argparse.Namespace,
    url: str,
    port: int,
    server_pid: int,
    console_port: int,
    console_pid: int,
    secret: str,
    tmp: Path,
    paths: list[str],
) -> dict[str, bool | None]:
    """Ingest without the console, then with each kind of reader, in turn, --rounds times; the
    verdict of each kind (None: every round disturbed)."""
    kinds = _uses(args, paths)
    count = int(args.rate * (args.warmup + args.duration))
    print(
        f"\nIngest at {args.rate:g} webhooks/s (open loop, each a new job; {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured): quiet, then with "
        + "; ".join(f"{kind.label}: {kind.what}" for kind in kinds)
        + " (the pages above in turn), the console served by "
        + {
            "child": "the server's console process (nice +10, relayed over a Unix socket)",
            "same": "the process that answers the webhooks (RECEIVER_CONSOLE_PROCESS=same)",
            "own": "a receiver serve of its own",
        }[args.console_process]
        + f". {args.rounds} round(s), in that order; the outbox is marked "
        "dispatched between runs, as a publisher would keep it"
    )
    runs: dict[str, list[_console_ingest.IngestRun]] = {"quiet": [], **{kind.label: [] for kind in kinds}}
    for round_no in range(1, args.rounds + 1):
        for kind in [None, *kinds]:
            label = "quiet" if kind is None else kind.label

            def readers(kind: Use | None = kind) -> _console_http.Readers:
                assert kind is not None
                return _console_http.Readers(console_port, TOKEN, kind.readers)

            for attempt in range(1, args.attempts + 1):
                body_file = _console_ingest.bodies(tmp, secret, count, f"{label}{round_no}{attempt}")
                _dispatched(url)
                _databases.checkpoint(url)
                time.sleep(1.0)
                result = _console_ingest.run(
                    f"{label} {round_no}",
                    port,
                    body_file,
                    rate=args.rate,
                    warmup=args.warmup,
                    tmp=tmp,
                    server_pid=server_pid,
                    console_pid=None if console_pid == server_pid else console_pid,
                    database_url=url,
                    alongside=None if kind is None else readers,
                )
                body_file.unlink()
                other = result.cpu["other"] if result.cpu else 0.0
                result.disturbed = other > args.max_other
                if not result.disturbed:
                    break
                _run.log(
                    f"ingest {label} {round_no}: disturbed (other processes used {other:.2f} cores, "
                    f"over --max-other {args.max_other:g})" + ("; again" if attempt < args.attempts else "")
                )
            runs[label].append(result)
    header = (
        f"{'run':<12} {'sent':>7} {'2xx':>7} {'non-2xx':>7} {'err':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'late ms':>8} {'pages':>6}"
    )
    _report.print_header(header)
    for r in (r for label in runs for r in runs[label]):
        print(
            f"{r.label + (' *' if r.disturbed else ''):<12} {r.sent:>7,} {r.ok:>7,} {r.non_2xx:>7} {r.errors:>4} "
            f"{r.p(50):>8.2f} {r.p(99):>8.2f} "
            f"{r.answers[-1] if r.answers else float('nan'):>8.1f} {r.max_late_ms:>8.1f} {r.console_requests:>6}"
        )
        if r.cpu:
            print(f"{'':<12} cores busy: " + ", ".join(f"{name} {value:.2f}" for name, value in r.cpu.items()))
        if r.statuses:
            print(
                f"{'':<12} not 2xx: "
                + ", ".join(f"{n:,} x {code or 'no answer'}" for code, n in sorted(r.statuses.items()))
            )
        for what, n in r.console_failures.items():
            print(f"{'':<12} console: {n} x {what}")
    if any(r.disturbed for label in runs for r in runs[label]):
        print(
            f"* disturbed: other processes on the machine used more than {args.max_other:g} cores in all "
            f"{args.attempts} attempts; such a round is left out"
        )
    # Each kind against the quiet run of its own round (drift in the machine's load, the tables'
    # growth and the caches touch both alike), then the median over the rounds where neither was
    # disturbed: a p99 of a few milliseconds moves with whatever else the two cores do.
    verdicts: dict[str, bool | None] = {}
    for kind in kinds:
        pairs = [
            (quiet, busy)
            for quiet, busy in zip(runs["quiet"], runs[kind.label], strict=True)
            if not (quiet.disturbed or busy.disturbed)
        ]
        if not pairs:
            verdicts[kind.label] = None
            print(f"ingest p99, {kind.label}: every round disturbed, no verdict (run again on a quieter machine)")
            continue
        ratios = [busy.p(99) / quiet.p(99) for quiet, busy in pairs]
        ratio = _report.median(ratios)
        clean = all(r.ok == r.sent and not r.console_failures for pair in pairs for r in pair)
        verdicts[kind.label] = ratio <= INGEST_RATIO_TARGET and clean
        print(
            f"ingest p99, {kind.label}: "
            + ", ".join(f"{busy.p(99):.2f} / {quiet.p(99):.2f} ms" for quiet, busy in pairs)
            + f" (with / without, round by round); median ratio {ratio:.2f} (target <= {INGEST_RATIO_TARGET:g})"
            + ("" if clean else "; NOT CLEAN: see the rows above")
        )
    return verdicts


def _dispatched(url: str) -> None:
    """Mark the outbox dispatched, as the publisher this bench does not run would have: otherwise
    each run leaves its 20,000 events waiting, and the overview's backlog is an outage's."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE outbox_events SET dispatched_at = now() WHERE dispatched_at IS NULL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Console pages on 1M jobs, and ingest alongside (see the docstring).")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the template (default 1000000)")
    parser.add_argument("--days", type=float, default=30.0, help="the span they are spread over (default 30)")
    parser.add_argument("--refill", action="store_true", help="make the template again even if it is current")
    parser.add_argument("--fill-only", action="store_true", help="make (or check) the template and stop")
    parser.add_argument("--keep", action="store_true", help="keep the measured copy (its URL is printed)")
    parser.add_argument("--reuse", metavar="DATABASE", help="measure this database (a copy --keep kept) as it is")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page (default 30)")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="ingest webhooks/s alongside, 0 skips (default 1000)"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="measured ingest seconds per run (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="ingest warm-up seconds per run (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="ingest runs of each kind, alternating (default 2)")
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.1,
        help="an ingest run during which other processes used more cores than this is disturbed and run "
        "again (default 0.1)",
    )
    parser.add_argument(
        "--attempts", type=int, default=3, help="tries per ingest run before a disturbed one is kept (default 3)"
    )
    parser.add_argument(
        "--console-process",
        choices=("child", "same", "own"),
        default="child",
        help="child: the server's console process, as shipped (default); same: pages made by the process that "
        "answers webhooks (RECEIVER_CONSOLE_PROCESS=same); own: a receiver serve of its own",
    )
    parser.add_argument(
        "--pause", type=float, default=2.0, help="seconds between the pages of the operator in use (default 2)"
    )
    parser.add_argument(
        "--operators",
        type=int,
        default=2,
        help="operators opening a page a second each in the busy run; 0 skips it (default 2)",
    )
    parser.add_argument(
        "--no-hammer",
        dest="hammer",
        action="store_false",
        help="skip the run with one reader requesting pages back to back",
    )
    parser.add_argument(
        "--database-url",
        help=f"an admin URL of the PostgreSQL server (default: $DATABASE_URL, else {_databases.DEFAULT_ADMIN_URL})",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target failed")
    args = parser.parse_args(argv)
    if args.jobs < 1000 or args.days <= 0 or args.requests < 1 or args.rounds < 1 or args.operators < 0:
        parser.error("--jobs >= 1000; --days, --requests and --rounds must be positive, --operators at least 0")
    if args.rate < 0 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rate >= 0, --duration > 0, --warmup >= 0")
    return _run.run_main("console.py", run, args, _processes.kill_all)


if __name__ == "__main__":
    raise SystemExit(main())
