"""bench/publish.py end to end: signed webhooks POSTed at a steady rate to the ingest side while the
publisher (or worker) runs; for each event, the time from the webhook's 2xx at the load generator
to its arrival at the subscriber, matched by event id. Both ends read CLOCK_MONOTONIC.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _cpu
import _processes
import _publish_systems
import _pyload
import _report
import _run
import _subscriber
import orjson


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
        return _report.percentile(self.e2e, q)


def e2e(ctx: _publish_systems.Ctx, system: str, bodies: Path) -> Latency:
    """Start the system's ingest side and publisher on a fresh database, drive it with `bodies`
    at --rate, and match every accepted webhook's event at the subscriber."""
    args = ctx.args
    name = "bench_publish_e2e" if system == "receiver" else "bench_procrastinate_e2e"
    with ctx.db(name) as url:
        subscriber = _subscriber.Subscriber(ctx.tmp, f"{system}-e2e")
        port = _processes.free_port()
        worker: _processes.Proc | _processes.Procs
        if system == "receiver":
            _run.log("receiver end-to-end: receiver migrate, subscribers add, publish, serve")
            _publish_systems.migrate(ctx, url)
            _publish_systems.add_subscriber(ctx, url, subscriber.url)
            env = ctx.receiver_env(url, RECEIVER_PORT=str(port))
            worker = _processes.Proc("receiver publish (e2e)", ctx.publisher_argv(), env, ctx.tmp / "publish-e2e.log")
            server = _processes.Proc(
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
            _run.log("procrastinate end-to-end: schema, worker, ingest app")
            env = ctx.baseline_env(url, BENCH_SUBSCRIBER_URL=subscriber.url)
            _publish_systems.baseline_schema(env)
            # The ingest app's pool is the receiver's (RECEIVER_DB_POOL_SIZE 16); the worker's is --baseline-pool.
            serve_env = {**env, "BENCH_PROCRASTINATE_POOL": "16"}
            worker = ctx.workers(env, "e2e")
            server = _processes.Proc(
                "procrastinate ingest app (e2e)",
                [sys.executable, str(_publish_systems.BASELINE), "serve", "--port", str(port), "--task", "http"],
                serve_env,
                ctx.tmp / "baseline-serve-e2e.log",
            )
            result = Latency(
                system,
                ctx.baseline_settings + "; ingest: uvicorn (uvloop, httptools), one transaction: insert + defer",
            )
            ready_sql = "SELECT count(*) FROM procrastinate_workers"
        try:
            _processes.wait_http(port, "/readyz", server)
            _processes.wait_sql(url, ready_sql, worker, "the worker's database connection", timeout=60)
            time.sleep(1.0)
            out = ctx.tmp / f"load-{system}.json"
            _run.log(
                f"{system} end-to-end: {args.rate:g} webhooks/s for {args.warmup:g} s warm-up + {args.duration:g} s"
            )

            def probe_cpu(load_pid: int) -> None:
                # The load generator reads its bodies first (well under a second), then 0.1 s.
                time.sleep(args.warmup + 0.5)
                if _cpu.CpuProbe.available() and args.duration >= 3:
                    probe = _cpu.CpuProbe(
                        {
                            "ingest": {server.pid},
                            "publisher": worker.pids,
                            "subscriber": {subscriber.proc.pid},
                            "load gen": {load_pid},
                            "postgres": _cpu.postgres_pids(url),
                        }
                    )
                    time.sleep(args.duration - 1.0)
                    result.cpu = probe.finish()

            argv = [sys.executable, str(_pyload.SCRIPT), "steady", "--port", str(port), "--bodies", str(bodies)]
            _processes.run_child(
                [*argv, "--rate", str(args.rate), "--out", str(out)],
                "the load generator",
                timeout=args.warmup + args.duration + 120,
                during=probe_cpu,
                env=_processes.child_env(),
            )
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
    match(result, records, times, ids, rate=args.rate, warmup=args.warmup, keep=args.keep_records)
    result.seconds = args.duration
    return result


def match(
    result: Latency,
    records: dict[str, Any],
    times: list[float],
    ids: list[str],
    *,
    rate: float,
    warmup: float,
    keep: Path | None,
) -> None:
    """Fill `result` from the load generator's records and the subscriber's arrivals; the requests
    scheduled in the warm-up are not counted. With --keep-records, write every request to `keep`."""
    arrival: dict[str, float] = {}
    for moment, event_id in zip(times, ids, strict=True):
        arrival.setdefault(event_id, moment)  # the first arrival counts
    start: float = records["start"]
    warm_until = start + warmup
    answers: list[float] = []
    latencies: list[float] = []
    in_order: list[float] = []  # by schedule, for the trend
    for i, event_id in enumerate(records["event_ids"]):
        scheduled = start + i / rate
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
    result.max_late_ms = records["max_late_ms"]
    result.answer = sorted(answers)
    result.e2e = sorted(latencies)
    quarter = max(1, len(in_order) // 4)
    if in_order:
        result.trend = (
            _report.percentile(sorted(in_order[:quarter]), 50),
            _report.percentile(sorted(in_order[-quarter:]), 50),
        )
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        rows = [
            {
                "i": i,
                "scheduled": start + i / rate,
                "sent": records["sent"][i],
                "answered": records["done"][i],
                "status": records["status"][i],
                "event_id": event_id,
                "arrived": arrival.get(event_id) if event_id else None,
            }
            for i, event_id in enumerate(records["event_ids"])
        ]
        (keep / f"e2e-{result.system}.json").write_bytes(orjson.dumps(rows))
    if result.accepted < result.sent:
        result.notes.append(f"{result.sent - result.accepted} webhooks were not accepted with an event id")
