"""bench/publish.py's drains: a backlog of events in a fresh database, one subscriber (the HTTP
subscriber or a JetStream stream), and the rate at which `receiver publish`, or the procrastinate
worker, delivers all of them.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import _cpu
import _databases
import _nats
import _processes
import _publish_systems
import _run
import _subscriber
import psycopg

SEED_BATCH = 5000

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
        raise _run.BenchError(f"seeding created {created} outbox events, not {events}")
    return time.monotonic() - started


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
class Sink:
    """Where a drain's events arrive: the HTTP subscriber, or a JetStream stream of its own."""

    subscriber: _subscriber.Subscriber | None = None
    nats: _nats.Nats | None = None
    stream: str = ""
    prefix: str = ""

    def count(self) -> tuple[int, float | None, float | None]:
        """Arrivals so far, and the first and last arrival (monotonic)."""
        if self.subscriber is not None:
            return self.subscriber.arrivals()
        assert self.nats is not None
        return self.nats.stream_state(self.stream)

    def cpu_groups(self) -> dict[str, set[int]]:
        if self.subscriber is not None:
            return {"subscriber": {self.subscriber.proc.pid}}
        return {"nats-server": _cpu.pids_named("nats-server")}


def open_sink(ctx: _publish_systems.Ctx, sink: str, tag: str) -> Sink:
    if sink == "http":
        return Sink(subscriber=_subscriber.Subscriber(ctx.tmp, tag))
    assert ctx.nats is not None
    stream, prefix = ctx.stream()
    ctx.stack.callback(ctx.nats.delete_stream, stream)
    return Sink(nats=ctx.nats, stream=stream, prefix=prefix)


def drain_receiver(ctx: _publish_systems.Ctx, sink_name: str, otel: dict[str, str] | None = None) -> Drain:
    """The receiver's drain; with `otel` (bench/_otlp_sink.py's environment), traced into a sink
    that discards, every attempt sampled."""
    args = ctx.args
    with ctx.db(f"bench_publish_{sink_name}" + ("_otel" if otel else "")) as url:
        _run.log(f"receiver -> {sink_name}: receiver migrate")
        _publish_systems.migrate(ctx, url)
        sink = open_sink(ctx, sink_name, f"receiver-{sink_name}")
        extra: dict[str, str] = {}
        if sink.subscriber is not None:
            _publish_systems.add_subscriber(ctx, url, sink.subscriber.url)
        else:
            extra = {
                "RECEIVER_NATS_URL": args.nats_url,
                "RECEIVER_NATS_STREAM": sink.stream,
                "RECEIVER_NATS_SUBJECT_PREFIX": sink.prefix,
            }
            # The broker's subscription, before the events (the publisher would add it at start-up,
            # after them, and it receives only events created after it was added).
            _databases.query_one(
                url,
                "INSERT INTO subscriptions (id, kind, url) VALUES ('nats', 'nats', %s) RETURNING 1",
                (args.nats_url,),
            )
        _run.log(f"receiver -> {sink_name}: creating {args.events:,} events with receiver_ingest(...)")
        seed_s = seed_receiver(url, args.events, ctx.nonce)
        body = float(_databases.query_one(url, "SELECT avg(octet_length(payload::text)) FROM outbox_events") or 0)
        _databases.tidy(url)
        extra.update(otel or {})
        result = Drain(
            "receiver+otel" if otel else "receiver", sink_name, args.events, seed_s, body, ctx.receiver_settings
        )
        _run.log(f"receiver -> {sink_name}: {args.events:,} events in {seed_s:.1f} s; starting receiver publish")
        measure(
            ctx,
            result,
            url,
            sink,
            lambda: _processes.Proc(
                f"receiver publish ({sink_name})",
                ctx.publisher_argv(),
                ctx.receiver_env(url, **extra),
                ctx.tmp / f"publish-{sink_name}.log",
            ),
            queue="deliveries",
            done_sql="SELECT count(*) FROM deliveries WHERE state = 'delivered'",
            failed_sql="SELECT count(*) FROM deliveries WHERE state = 'dead' OR attempts > 1",
            label="receiver publish",
        )
    return result


def drain_baseline(ctx: _publish_systems.Ctx, sink_name: str) -> Drain:
    args = ctx.args
    with ctx.db(f"bench_procrastinate_{sink_name}") as url:
        _run.log(f"procrastinate -> {sink_name}: applying its schema")
        env = ctx.baseline_env(url)
        sink = open_sink(ctx, sink_name, f"baseline-{sink_name}")
        if sink.subscriber is not None:
            env["BENCH_SUBSCRIBER_URL"] = sink.subscriber.url
        else:
            env.update(BENCH_NATS_URL=args.nats_url, BENCH_NATS_STREAM=sink.stream, BENCH_NATS_PREFIX=sink.prefix)
        _publish_systems.baseline_schema(env)
        _run.log(f"procrastinate -> {sink_name}: deferring {args.events:,} tasks (batch_defer_async)")
        started = time.monotonic()
        _processes.run_cli(
            [
                sys.executable,
                str(_publish_systems.BASELINE),
                "seed",
                "--events",
                str(args.events),
                "--task",
                sink_name,
                "--nonce",
                ctx.nonce,
            ],
            env,
            "procrastinate seed",
            timeout=1800,
        )
        seed_s = time.monotonic() - started
        body = float(
            _databases.query_one(url, "SELECT avg(octet_length((args -> 'event')::text)) FROM procrastinate_jobs") or 0
        )
        _databases.tidy(url)
        result = Drain("procrastinate", sink_name, args.events, seed_s, body, ctx.baseline_settings)
        _run.log(f"procrastinate -> {sink_name}: {args.events:,} tasks in {seed_s:.1f} s; starting the worker")
        measure(
            ctx,
            result,
            url,
            sink,
            lambda: ctx.workers(env, sink_name),
            queue="procrastinate_jobs",
            done_sql="SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
            failed_sql="SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed' OR attempts > 1",
            label="procrastinate worker",
        )
    return result


def measure(
    ctx: _publish_systems.Ctx,
    result: Drain,
    url: str,
    sink: Sink,
    start: Callable[[], _processes.Proc | _processes.Procs],
    *,
    queue: str,
    done_sql: str,
    failed_sql: str,
    label: str,
) -> None:
    """Start the publisher (or the workers) on the seeded database and time the drain; with
    --analyze-every, `queue` is ANALYZEd meanwhile."""
    with contextlib.ExitStack() as analyzing:
        analyzing.enter_context(_databases.periodic_analyze(url, queue, ctx.args.analyze_every))
        worker = start()
        try:
            wait_drain(
                ctx,
                result,
                worker,
                sink.count,
                done_sql,
                url,
                lambda: {"publisher": worker.pids, **sink.cpu_groups(), "postgres": _cpu.postgres_pids(url)},
            )
            result.failed = int(_databases.query_one(url, failed_sql) or 0)
        finally:
            analyzing.close()
            code = worker.stop()
            if code not in (0, None):
                result.notes.append(f"{label} exited with {code}")
            if worker.errors():
                result.notes.append(f"{label} logged:\n{worker.errors()}")
    if sink.subscriber is not None:
        _, ids = sink.subscriber.finish()
        result.arrived, result.distinct = len(ids), len(set(ids))


def wait_drain(
    ctx: _publish_systems.Ctx,
    result: Drain,
    worker: _processes.Proc | _processes.Procs,
    sink_count: Callable[[], tuple[int, float | None, float | None]],
    done_sql: str,
    url: str,
    cpu_groups: Callable[[], dict[str, set[int]]],
) -> None:
    """From the first arrival at the sink to all done in the database; CPU in between."""
    args = ctx.args
    deadline = time.monotonic() + 60
    probe: _cpu.CpuProbe | None = None
    count = 0
    while True:
        worker.check()
        count, _, _ = sink_count()
        if count > 0:
            if _cpu.CpuProbe.available():
                probe = _cpu.CpuProbe(cpu_groups())
            break
        if time.monotonic() > deadline:
            raise _run.BenchError(f"nothing reached the sink 60 s after {worker.name} started:\n{worker.tail()}")
        time.sleep(0.02)
    _run.log(f"{result.system} -> {result.sink}: first delivery seen; draining")
    deadline = time.monotonic() + args.drain_timeout
    last_report = time.monotonic()
    while count < result.events and time.monotonic() < deadline:
        worker.check()
        time.sleep(0.1)
        count, _, _ = sink_count()
        if time.monotonic() - last_report > 15:
            _run.log(f"{result.system} -> {result.sink}: {count:,} of {result.events:,} at the sink")
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
