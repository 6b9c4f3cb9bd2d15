"""bench/publish.py's report: the drain and end-to-end tables, the CPU split, the receiver next to
procrastinate with the targets and PASS/FAIL, the settings, and the checks that say whether the
figures can be trusted.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import _publish_drain
import _publish_e2e
import _publish_systems
import _report

TARGET_HTTP_PER_S = 2000.0
TARGET_NATS_PER_S = 5000.0
TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0


def report(
    ctx: _publish_systems.Ctx,
    drains: dict[tuple[str, str], _publish_drain.Drain],
    latencies: dict[str, _publish_e2e.Latency],
) -> int:
    """Print the tables, the side-by-side figures with PASS/FAIL, the settings and the checks;
    the exit status: 1 with --strict when a target failed or a drain was incomplete, else 0."""
    args = ctx.args
    print()
    if drains:
        print(f"drain: {args.events:,} pending events, one subscriber")
        _report.print_header(
            f"{'system':<14} {'sink':<5} {'events/s':>9} {'sink ev/s':>9} {'seconds':>8} {'done':>8} "
            f"{'arrived':>8} {'distinct':>8} {'retried':>7} {'body B':>6} {'seed s':>6}"
        )
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
        _report.print_header(
            f"{'system':<14} {'sent':>6} {'2xx':>6} {'errors':>6} {'matched':>7} {'missing':>7} "
            f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'min ms':>7} "
            f"{'answer p50':>10} {'answer p99':>10} {'late ms':>7}"
        )
        for r in latencies.values():
            print(
                f"{r.system:<14} {r.sent:>6,} {r.ok:>6,} {r.non_2xx + r.errors:>6,} {r.matched:>7,} {r.missing:>7,} "
                f"{r.p(50):>7.2f} {r.p(90):>7.2f} {r.p(99):>7.2f} {(r.e2e[-1] if r.e2e else float('nan')):>7.2f} "
                f"{(r.e2e[0] if r.e2e else float('nan')):>7.2f} {_report.percentile(r.answer, 50):>10.2f} "
                f"{_report.percentile(r.answer, 99):>10.2f} {r.max_late_ms:>7.1f}"
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
    _report.print_header(
        f"{'figure':<26} {'receiver':>10} {'procrastinate':>13} {'ratio':>7}  {'target':<8} {'target':>6} {'ahead':>6}"
    )
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
            f"{_report.verdict(target_ok):>6} {_report.verdict(ahead):>6}"
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
