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
    .venv/bin/python bench/publish.py --only receiver --figures http --otel  # what tracing costs

--otel drains once more to each sink with tracing on: OTEL_EXPORTER_OTLP_ENDPOINT set to a
local OTLP/HTTP sink that discards (_otlp_sink.py), every attempt sampled, and prints the rate
against the untraced drain. The seeded events carry no trace context (they come from SQL, not
webhooks), so each attempt is a root span: the publisher's whole cost, minus one link.

Targets (2-core machine): >= 2,000 events/s to HTTP, >= 5,000 events/s to NATS,
end-to-end p50 <= 20 ms and p99 <= 100 ms, and ahead of the procrastinate baseline
on each figure. Exit status 0 when the measurements ran (1 with --strict when a
target failed), 2 when they could not. Everything it starts and every database and
stream it creates is removed at the end, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import tempfile
import time
from pathlib import Path

import _bodies
import _databases
import _nats
import _otlp_sink
import _processes
import _publish_drain
import _publish_e2e
import _publish_health
import _publish_report
import _publish_systems
import _report
import _run
import psycopg

PACKAGES = ("procrastinate", "psycopg", "aiohttp", "nats-py", "uvloop")  # versions printed in the header


def run(args: argparse.Namespace, stack: contextlib.ExitStack[bool | None]) -> int:
    admin_url = _databases.admin_url(args.database_url)
    try:
        pg_version = _databases.query_one(admin_url, "SHOW server_version")
    except psycopg.Error as exc:
        raise _run.BenchError(f"cannot connect to {_databases.redact(admin_url)}: {exc}") from None
    if "baseline" in args.only:
        try:
            import procrastinate  # noqa: F401
        except ImportError:
            raise _run.BenchError(
                "procrastinate is not installed: .venv/bin/pip install procrastinate (or use --only receiver)"
            ) from None
    nats: _nats.Nats | None = None
    if "nats" in args.figures:
        try:
            nats = _nats.Nats(args.nats_url)
        except Exception as exc:
            raise _run.BenchError(f"cannot connect to NATS at {args.nats_url}: {exc} (or use --skip-nats)") from None
        stack.callback(nats.close)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-publish-")))
    ctx = _publish_systems.Ctx(
        args=args,
        stack=stack,
        admin_url=admin_url,
        tmp=tmp,
        webhook_secret=_bodies.webhook_secret(),
        subscriber_secret=_bodies.subscriber_secret(),
        master_key=_bodies.master_key(),
        nonce=secrets.token_hex(4),
        nats=nats,
    )
    systems = [("receiver", "receiver"), ("baseline", "procrastinate")]
    _report.print_machine("doitong-receiver publish benchmark", PACKAGES)
    print(f"  receiver     : {_report.code_version()}")
    print(f"  postgresql   : {pg_version} ({_databases.redact(admin_url)})")
    print(f"  nats         : {args.nats_url if nats else 'skipped'}")
    autovacuum = _databases.query_one(admin_url, "SHOW autovacuum")
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
        f"  run          : drains of {args.events:,} events "
        f"({', '.join(f for f in args.figures if f in ('http', 'nats'))}); "
        f"end to end {args.rate:g}/s for {args.warmup:g}+{args.duration:g} s; systems: "
        + ", ".join(label for key, label in systems if key in args.only),
        flush=True,
    )
    if "health" in args.figures:
        print(
            f"  health runs  : {', '.join(args.health_variants)} at {args.health_rate:g}/s for "
            f"{args.warmup:g}+{args.health_duration:g} s each (receiver only)",
            flush=True,
        )

    drains: dict[tuple[str, str], _publish_drain.Drain] = {}
    latencies: dict[str, _publish_e2e.Latency] = {}
    for sink in ("http", "nats"):
        if sink not in args.figures:
            continue
        for key, label in systems:
            if key not in args.only:
                continue
            drain = _publish_drain.drain_receiver if key == "receiver" else _publish_drain.drain_baseline
            d = drain(ctx, sink)
            drains[(label, sink)] = d
            _run.log(f"{label} -> {sink}: {d.rate:,.0f} events/s ({d.done:,} done)")
            time.sleep(1.0)
    if args.otel:
        _traced_drains(ctx, drains)
    if "e2e" in args.figures:
        bodies = tmp / "bodies.txt"
        count = int(args.rate * (args.warmup + args.duration))
        _bodies.write(bodies, (_bodies.publish_document(i, ctx.nonce) for i in range(count)), ctx.webhook_secret)
        for key, label in systems:
            if key not in args.only:
                continue
            r = _publish_e2e.e2e(ctx, label, bodies)
            latencies[label] = r
            _run.log(f"{label} end-to-end: p50 {r.p(50):.2f} ms, p99 {r.p(99):.2f} ms ({r.matched:,} matched)")
            time.sleep(1.0)
    health: dict[str, _publish_health.HealthRun] = {}
    if "health" in args.figures:
        bodies = tmp / "bodies-health.txt"
        count = int(args.health_rate * (args.warmup + args.health_duration))
        _bodies.write(bodies, (_bodies.publish_document(i, ctx.nonce) for i in range(count)), ctx.webhook_secret)
        health = _publish_health.run(ctx, bodies)
    print(f"\n  load average : {_report.load_average()} (1, 5, 15 min, after the run)")
    status = _publish_report.report(ctx, drains, latencies)
    if health and _publish_health.report(ctx, health) and args.strict:
        status = 1
    return status


def _traced_drains(ctx: _publish_systems.Ctx, drains: dict[tuple[str, str], _publish_drain.Drain]) -> None:
    """Each receiver drain again, traced into a discarding OTLP sink; prints the cost."""
    sink = _otlp_sink.OtlpSink()
    ctx.stack.callback(sink.close)
    for (label, sink_name), untraced in list(drains.items()):
        if label != "receiver":
            continue
        traced = _publish_drain.drain_receiver(ctx, sink_name, sink.env())
        drains[("receiver+otel", sink_name)] = traced
        cost = (1 - traced.rate / untraced.rate) * 100 if untraced.rate else float("nan")
        print(
            f"  tracing on, receiver -> {sink_name}: {traced.rate:,.0f} events/s vs {untraced.rate:,.0f} off"
            f" = {traced.rate / untraced.rate:.3f}x ({cost:+.1f} % cost); the sink took {sink.requests:,} batches,"
            f" {sink.bytes / 1e6:,.1f} MB",
            flush=True,
        )
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
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
        help="which measurements: http, nats, e2e, and health: one bad subscriber of four (down, "
        "rate-limited, slow) and the healthy ones' latency (default http,nats,e2e)",
    )
    parser.add_argument("--health-rate", type=float, default=200.0, help="webhooks/s for the health runs (default 200)")
    parser.add_argument(
        "--health-duration", type=float, default=10.0, help="measured seconds of each health run (default 10)"
    )
    parser.add_argument(
        "--health-slow", type=float, default=2.0, help="seconds the slow subscriber takes to answer (default 2)"
    )
    parser.add_argument(
        "--health-variants",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=list(_publish_health.VARIANTS),
        help=f"which health runs ({', '.join(_publish_health.VARIANTS)}: all by default)",
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
        help=f"admin URL of the PostgreSQL server (default: $DATABASE_URL, else {_databases.DEFAULT_ADMIN_URL})",
    )
    parser.add_argument(
        "--nats-url", default=_nats.DEFAULT_NATS_URL, help=f"NATS with JetStream (default {_nats.DEFAULT_NATS_URL})"
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
    parser.add_argument(
        "--otel",
        action="store_true",
        help="drain again with tracing on (every attempt sampled, OTLP/HTTP to a local sink that discards) "
        "and print what it costs",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    if not args.only or any(x not in ("receiver", "baseline") for x in args.only):
        parser.error("--only: receiver, baseline or both")
    if any(x not in ("http", "nats", "e2e", "health") for x in args.figures):
        parser.error("--figures: http, nats, e2e, health")
    if any(x not in _publish_health.VARIANTS for x in args.health_variants):
        parser.error("--health-variants: " + ", ".join(_publish_health.VARIANTS))
    if args.skip_nats:
        args.figures = [f for f in args.figures if f != "nats"]
    if args.events < 1 or args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.concurrency < 1:
        parser.error("--events, --rate, --duration and --concurrency must be positive")

    return _run.run_main("publish.py", run, args, _processes.kill_all)


if __name__ == "__main__":
    raise SystemExit(main())
