"""Hostile connections against one `receiver serve`, with legitimate webhooks measured alongside.

What it measures
    Signed webhooks (each a new job, answered "accepted") go to the server at a steady rate
    (open loop, `_pyload.py steady`) while nothing else happens: the quiet p50/p99. Then the
    same load again while one kind of attack runs from another process (`_attack.py`), each
    with --connections connections kept open (re-opened whenever the server closes one):
        slowloris  a request head one short line every 2 s (never finished)
        slowbody   a whole head, then a body byte every 2 s
        headers    a 64 MB header streamed as fast as the server reads it, by --header-streams
                   connections (10), each starting a new one --header-pause s (0.1) after the
                   server closed the last: a hundred 64 MB requests a second. With a pause of 0
                   it becomes a flood of new connections as fast as one core can open them,
                   which no per-connection limit stops (see the README: limits per client
                   address belong in front of the receiver)
        flood      connections that connect and say nothing
    For each: the legitimate p99 against the quiet one, what the server answered the attackers
    (408, 431, ...) and after how long, and how much of a huge header it read. Then the attacks
    stop and, once the server has closed what they left, the quiet load runs again and the
    server's memory (RSS) is compared with what it was after the first quiet run.

Targets (from issue #10): with each attack running, the legitimate p99 within 1.5x the quiet
p99; memory after the attacks within 10 % of before. No legitimate request may fail.

    .venv/bin/python bench/resources.py [--rate 200] [--duration 20] [--connections 1000]

It creates a database `bench_resources_<pid>` on the server given by --database-url (default:
$DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres), migrates it with `receiver
migrate`, and removes it and everything it started at the end, also on Ctrl-C or failure.
Only 127.0.0.1 is attacked.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _bodies
import _console_ingest
import _databases
import _processes
import _report
import _run
import orjson

ATTACKS = ("slowloris", "slowbody", "headers", "flood")
P99_RATIO_TARGET = 1.5
MEMORY_RATIO_TARGET = 1.10
ATTACK_SCRIPT = Path(__file__).resolve().parent / "_attack.py"


def rss_kib(pid: int) -> int:
    """The process's resident memory (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise _run.BenchError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def attacking(kind: str, port: int, connections: int, tmp: Path, ramp: float, pause: float) -> Iterator[Path]:
    """`_attack.py kind` running (after `ramp` seconds to open its connections) for the block;
    yields the file it writes its tally to when stopped."""
    out = tmp / f"attack-{kind}.json"
    argv = [sys.executable, str(ATTACK_SCRIPT), kind, "--port", str(port), "--connections", str(connections)]
    argv += ["--pause", str(pause)]
    attacker = _processes.Proc(f"attack {kind}", [*argv, "--out", str(out)], _processes.child_env(), tmp / "attack.log")
    try:
        time.sleep(ramp)
        attacker.check()
        yield out
    finally:
        attacker.stop(timeout=30)


def describe(tally: dict[str, Any]) -> str:
    lifetimes: list[float] = tally["lifetimes"]
    statuses = ", ".join(f"{count:,} x {status}" for status, count in sorted(tally["statuses"].items()))
    text = (
        f"{tally['opened']:,} opened (at most {tally['most_open']:,} at once), "
        f"{tally['closed_by_server']:,} closed by the server"
    )
    if lifetimes:
        text += (
            f" after {_report.percentile(lifetimes, 50):.2f} s median, {lifetimes[-1]:.2f} s longest;"
            f" answers: {statuses or '-'}"
        )
    if tally["header_bytes_sent"]:
        sent = tally["header_bytes_sent"]
        text += f"; header bytes sent before the close: median {_report.percentile(sent, 50) / 1024:,.0f} KiB"
    return text


def run(args: argparse.Namespace, stack: contextlib.ExitStack[bool | None]) -> int:
    admin_url = _databases.admin_url(args.database_url)
    if not _databases.reachable(admin_url):
        raise _run.BenchError(f"cannot connect to {_databases.redact(admin_url)} (bench/resources.py needs a server)")
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-resources-")))
    _report.print_machine("doitong-receiver resource benchmark (hostile connections)", ["uvicorn", "httptools"])
    print(f"  code         : {_report.code_version()}")
    print(
        f"  load         : {args.rate:g} signed webhooks/s for {args.duration:g} s (+{args.warmup:g} s warm-up) "
        f"per phase; {args.connections:,} attacking connections per attack "
        f"({args.header_streams} for headers, {args.header_pause:g} s apart)",
        flush=True,
    )
    url = stack.enter_context(_databases.database(admin_url, f"bench_resources_{os.getpid()}"))
    secret = _bodies.webhook_secret()
    port = _processes.free_port()
    env = _processes.child_env(
        DATABASE_URL=url,
        DOITONG_WEBHOOK_SECRET=secret,
        RECEIVER_MASTER_KEY=_bodies.master_key(),
        RECEIVER_HOME=str(tmp / "home"),
        RECEIVER_PORT=str(port),
        RECEIVER_LOG_LEVEL="warning",
    )
    _processes.run_cli([sys.executable, "-m", "receiver", "migrate"], env, "receiver migrate")
    server = _processes.Proc("receiver serve", [sys.executable, "-m", "receiver", "serve"], env, tmp / "serve.log")
    stack.callback(server.stop)
    _processes.wait_http(port, "/readyz", server, timeout=120)
    count = int(args.rate * (args.warmup + args.duration))

    def legit(label: str) -> _console_ingest.IngestRun:
        bodies = _console_ingest.bodies(tmp, secret, count, label)
        result = _console_ingest.run(
            label,
            port,
            bodies,
            rate=args.rate,
            warmup=args.warmup,
            tmp=tmp,
            server_pid=server.pid,
            console_pid=None,
            database_url=url,
        )
        server.check()
        return result

    legit("warm-up")
    quiet = legit("quiet")
    rss_before = rss_kib(server.pid)
    rows: list[tuple[str, _console_ingest.IngestRun, str, float]] = []
    for kind in args.attacks:
        connections = args.header_streams if kind == "headers" else args.connections
        pause = args.header_pause if kind == "headers" else 0.0
        with attacking(kind, port, connections, tmp, args.ramp, pause) as tally_file:
            measured = legit(kind)
            rss_during = rss_kib(server.pid)
        rows.append((kind, measured, describe(orjson.loads(tally_file.read_bytes())), rss_during))
    _run.log(f"attacks over; waiting {args.settle:g} s for the server to close what they left")
    time.sleep(args.settle)
    after = legit("after")
    rss_after = rss_kib(server.pid)

    print(f"\nLegitimate webhooks at {args.rate:g}/s, {args.duration:g} s measured per phase")
    _report.print_header(
        f"{'phase':<10} {'2xx':>8} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'p99/quiet':>10} {'RSS MiB':>8} "
        f"{'server cores':>13} {'other cores':>12}  target"
    )
    ok = True

    def line(label: str, result: _console_ingest.IngestRun, rss: float, judged: bool) -> None:
        nonlocal ok
        ratio = result.p(99) / quiet.p(99)
        failed = result.sent - result.ok
        passed = failed == 0 and (ratio <= P99_RATIO_TARGET or not judged)
        ok = ok and passed
        target = _report.verdict(passed) if judged else ("PASS" if failed == 0 else "FAIL")
        cpu = result.cpu or {}
        print(
            f"{label:<10} {result.ok:>8,} {failed:>7,} {result.p(50):>8.2f} {result.p(99):>8.2f} "
            f"{ratio:>9.2f}x {rss / 1024:>8.1f} {cpu.get('server', float('nan')):>13.2f} "
            f"{cpu.get('other', float('nan')):>12.2f}  {target}"
        )

    line("quiet", quiet, rss_before, judged=False)
    for kind, measured, _, rss in rows:
        line(kind, measured, rss, judged=True)
    line("after", after, rss_after, judged=False)

    print("  (cores busy over the measured seconds; 'other' is everything but the server, its PostgreSQL")
    print("   and the load generator: the attacker, and whatever else the machine ran)")
    print("\nWhat the attackers got")
    for kind, _, text, _ in rows:
        print(f"  {kind:<10} {text}")
    memory_ratio = rss_after / rss_before
    memory_ok = memory_ratio <= MEMORY_RATIO_TARGET
    if server.errors():
        print(f"\nreceiver serve logged:\n{server.errors()}")
    print("\nTargets")
    print(f"  legitimate p99 during each attack <= {P99_RATIO_TARGET:g}x quiet, none failed : {_report.verdict(ok)}")
    print(
        f"  memory after the attacks <= {MEMORY_RATIO_TARGET:.2f}x before "
        f"({rss_after / 1024:.1f} vs {rss_before / 1024:.1f} MiB = {memory_ratio:.3f}x) : {_report.verdict(memory_ok)}"
    )
    return 1 if args.strict and not (ok and memory_ok) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Hostile connections vs legitimate p99 and memory (see the docstring)")
    parser.add_argument("--rate", type=float, default=200.0, help="legitimate webhooks/s (default 200)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per phase (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds at the start of each phase")
    parser.add_argument("--connections", type=int, default=1000, help="attacking connections (default 1000)")
    parser.add_argument("--header-streams", type=int, default=10, help="connections of the headers attack (10)")
    parser.add_argument(
        "--header-pause", type=float, default=0.1, help="seconds before a headers stream starts again (0.1)"
    )
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS), help="which, in order")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds for an attack to open its connections")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the attacks before 'after'")
    parser.add_argument(
        "--database-url",
        help=f"an admin URL of the PostgreSQL server (default: $DATABASE_URL, else {_databases.DEFAULT_ADMIN_URL})",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target failed")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.connections < 1:
        parser.error("--rate, --duration and --connections must be positive, --warmup >= 0")
    return _run.run_main("resources.py", run, args, _processes.kill_all)


if __name__ == "__main__":
    raise SystemExit(main())
