"""bench/publish.py --figures health: one bad subscriber of four, and what it costs the others.

Each variant is an end-to-end run (signed webhooks at --health-rate to `receiver serve`, one
`receiver publish`, as in _publish_e2e) on a fresh database, with three healthy subscribers and,
but for the last run, a fourth bad one:
- down: the fourth's port is closed (every attempt fails at once: the circuit breaker opens);
- rate-limited: the fourth answers at once but has `--rate 20/s`, far under the webhook rate;
- slow: the fourth answers every request after --health-slow seconds;
- none: the three healthy subscribers alone (the reference).
Reported: the healthy subscribers' latency (p50, p99: the three pooled; a webhook's 2xx to its
arrival, same event id) and its p99 against the reference (target <= 1.2x); and the claim work the
bad one cost: rows claimed and sent (deliveries.attempts), claims given back unattempted, and
claims that waited for their rate-limit slot, next to what each healthy subscriber cost.
RECEIVER_SUBSCRIBER_CONCURRENCY is the receiver's default (16) in these runs, not the bench's 64.
"""

from __future__ import annotations

import http.client
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _databases
import _processes
import _publish_e2e
import _publish_systems
import _pyload
import _report
import _run
import _subscriber
import orjson
import psycopg

# The reference runs last: the first run of a session is slower whatever it is (cold caches),
# and that must not make the bad ones look good.
VARIANTS = ("down", "rate-limited", "slow", "none")
# The receiver's default: the bench's own default lets one subscriber take every slot.
SUBSCRIBER_CONCURRENCY = "16"
TARGET_RATIO = 1.2
BAD_RATE = "20/s"


@dataclass
class HealthRun:
    variant: str
    healthy: list[float] = field(default_factory=list)  # ms, the three healthy subscribers pooled (sorted)
    matched: int = 0
    missing: int = 0
    accepted: int = 0
    bad_deliveries: int = 0  # deliveries written for the bad subscriber
    bad_attempts: int = 0  # rows claimed for it and sent
    bad_delivered: int = 0
    healthy_attempts: float = 0.0  # per healthy subscriber
    released: float = 0.0  # claims given back unattempted (all subscribers)
    paced: float = 0.0  # claims that waited for a rate-limit slot
    circuit: str = "-"
    notes: list[str] = field(default_factory=list)

    def p(self, q: float) -> float:
        return _report.percentile(self.healthy, q)


def run(ctx: _publish_systems.Ctx, bodies: Path) -> dict[str, HealthRun]:
    runs: dict[str, HealthRun] = {}
    for variant in ctx.args.health_variants:
        result = _one(ctx, variant, bodies)
        runs[variant] = result
        _run.log(
            f"one bad subscriber ({variant}): healthy p50 {result.p(50):.2f} ms, p99 {result.p(99):.2f} ms; "
            f"bad one: {result.bad_attempts:,} rows claimed"
        )
        time.sleep(1.0)
    return runs


def _one(ctx: _publish_systems.Ctx, variant: str, bodies: Path) -> HealthRun:
    args = ctx.args
    result = HealthRun(variant)
    with ctx.db(f"bench_publish_health_{variant.replace('-', '_')}") as url:
        healthy = [_subscriber.Subscriber(ctx.tmp, f"health-{variant}-{n}") for n in range(3)]
        _publish_systems.migrate(ctx, url)
        env = {**ctx.receiver_env(url), "RECEIVER_SUBSCRIBER_CONCURRENCY": SUBSCRIBER_CONCURRENCY}
        for subscriber in healthy:
            _add(env, subscriber.url, ctx.subscriber_secret)
        bad: _subscriber.Subscriber | None = None
        bad_id: str | None = None
        if variant == "down":
            bad_id = _add(env, f"http://127.0.0.1:{_processes.free_port()}/hooks/down", ctx.subscriber_secret)
        elif variant == "rate-limited":
            bad = _subscriber.Subscriber(ctx.tmp, f"health-{variant}-bad")
            bad_id = _add(env, bad.url, ctx.subscriber_secret, "--rate", BAD_RATE)
        elif variant == "slow":
            bad = _subscriber.Subscriber(ctx.tmp, f"health-{variant}-bad", delay=args.health_slow)
            bad_id = _add(env, bad.url, ctx.subscriber_secret)
        port, metrics_port = _processes.free_port(), _processes.free_port()
        env = {
            **ctx.receiver_env(url, RECEIVER_PORT=str(port)),
            "RECEIVER_SUBSCRIBER_CONCURRENCY": SUBSCRIBER_CONCURRENCY,
        }
        worker = _processes.Proc(
            f"receiver publish (health, {variant})",
            [*ctx.publisher_argv(), "--metrics-port", str(metrics_port)],
            env,
            ctx.tmp / f"publish-health-{variant}.log",
        )
        server = _processes.Proc(
            f"receiver serve (health, {variant})",
            [sys.executable, "-m", "receiver", "serve", "--port", str(port)],
            env,
            ctx.tmp / f"serve-health-{variant}.log",
        )
        try:
            _processes.wait_http(port, "/readyz", server)
            _processes.wait_http(metrics_port, "/readyz", worker)
            time.sleep(1.0)
            out = ctx.tmp / f"load-health-{variant}.json"
            argv = [sys.executable, str(_pyload.SCRIPT), "steady", "--port", str(port), "--bodies", str(bodies)]
            _processes.run_child(
                [*argv, "--rate", str(args.health_rate), "--out", str(out)],
                "the load generator",
                timeout=args.warmup + args.health_duration + 120,
                env=_processes.child_env(),
            )
            records = orjson.loads(out.read_bytes())
            accepted = sum(1 for e in records["event_ids"] if e)
            deadline = time.monotonic() + 30
            while min(s.stats()["distinct"] for s in healthy) < accepted and time.monotonic() < deadline:
                worker.check()
                time.sleep(0.1)
            metrics = _scrape(metrics_port)
            result.released = _sum(metrics, "receiver_delivery_claims_released_total")
            result.paced = _sum(metrics, "receiver_subscriber_rate_limited_total")
        finally:
            server.stop()
            code = worker.stop()
            if code not in (0, None):
                result.notes.append(f"{worker.name} exited with {code}")
            for proc in (server, worker):
                if proc.errors() and variant == "none":
                    result.notes.append(f"{proc.name} logged:\n{proc.errors()}")
        if bad is not None:
            bad.finish()
        _count(url, result, bad_id)
        for subscriber in healthy:
            times, ids = subscriber.finish()
            one = _publish_e2e.Latency("receiver", "")
            _publish_e2e.match(one, records, times, ids, rate=args.health_rate, warmup=args.warmup, keep=None)
            result.healthy.extend(one.e2e)
            result.matched += one.matched
            result.missing += one.missing
            result.accepted += one.accepted
    result.healthy.sort()
    return result


def _add(env: dict[str, str], target: str, secret: str, *extra: str) -> str:
    output = _processes.run_cli(
        [sys.executable, "-m", "receiver", "subscribers", "add", target, "--secret", secret, *extra],
        env,
        "receiver subscribers add",
    )
    return output.split()[1]  # "id  sub_…"


def _count(url: str, result: HealthRun, bad_id: str | None) -> None:
    healthy = _databases.query_one(
        url,
        "SELECT coalesce(sum(attempts), 0) FROM deliveries WHERE subscription_id <> %s",
        (bad_id or "",),
    )
    result.healthy_attempts = float(healthy) / 3
    if bad_id is None:
        return
    row = _row(
        url,
        "SELECT count(*), coalesce(sum(attempts), 0), count(*) FILTER (WHERE state = 'delivered')"
        " FROM deliveries WHERE subscription_id = %s",
        (bad_id,),
    )
    result.bad_deliveries, result.bad_attempts, result.bad_delivered = int(row[0]), int(row[1]), int(row[2])
    state = _row(
        url,
        "SELECT consecutive_failures, circuit_open_until > now(), circuit_cooloff::text FROM subscriptions"
        " WHERE id = %s",
        (bad_id,),
    )
    if state[1]:
        result.circuit = f"open ({state[0]} failures, cool-off {state[2]})"
    elif state[0]:
        result.circuit = f"closed, {state[0]} failures"
    else:
        result.circuit = "closed"


def _row(url: str, statement: str, params: tuple[str, ...]) -> tuple[Any, ...]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(statement, params).fetchone()
        assert row is not None
        return row


def _scrape(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _sum(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name))


def report(ctx: _publish_systems.Ctx, runs: dict[str, HealthRun]) -> int:
    """Print the table; the number of targets failed."""
    args = ctx.args
    reference = runs.get("none")
    print(
        f"\none bad subscriber of four: {args.health_rate:g} webhooks/s for {args.health_duration:g} s "
        f"(after {args.warmup:g} s warm-up); bad = down (closed port), rate-limited ({BAD_RATE}), "
        f"slow ({args.health_slow:g} s per answer)"
    )
    _report.print_header(
        f"{'bad subscriber':<14} {'matched':>8} {'missing':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99 ratio':>9} "
        f"{'target':>6} {'bad: events':>11} {'claimed':>8} {'delivered':>9} {'released':>8} {'paced':>7} "
        f"{'healthy claimed':>15}  circuit"
    )
    failures = 0
    for r in runs.values():
        ratio = r.p(99) / reference.p(99) if reference and reference.healthy and r.healthy else float("nan")
        verdict: bool | None = None if r is reference else ratio <= TARGET_RATIO
        failures += verdict is False
        print(
            f"{r.variant:<14} {r.matched:>8,} {r.missing:>7,} {r.p(50):>7.2f} {r.p(99):>7.2f} "
            f"{ratio:>8.2f}x {_report.verdict(verdict):>6} {r.bad_deliveries:>11,} {r.bad_attempts:>8,} "
            f"{r.bad_delivered:>9,} {r.released:>8,.0f} {r.paced:>7,.0f} {r.healthy_attempts:>15,.0f}  {r.circuit}"
        )
        for note in r.notes:
            print("  " + note)
    print(
        f"(p50, p99: the three healthy subscribers pooled, webhook 2xx -> arrival; p99 ratio: against the run "
        f"without the bad one, target <= {TARGET_RATIO:g}x; bad: events: deliveries written for it; claimed: "
        "rows claimed for it and sent (its claim work; a closed circuit and no limit would claim every event, "
        "and every retry); released: claims given back unattempted (all subscribers); paced: claims that "
        "waited for a rate-limit slot; healthy claimed: the same per healthy subscriber)"
    )
    return failures
