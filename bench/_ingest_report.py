"""bench/ingest.py's results and its report: the table, the CPU split, the ratio to the
baseline, the targets with PASS/FAIL, and the checks that say whether the figures can be trusted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import _load
import _report

TARGET_ACCEPTED_PER_S = 3000.0
TARGET_P99_MS = 25.0
TARGET_RATIO = 0.7


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
    load: _load.LoadResult
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


def report(args: argparse.Namespace, results: dict[str, list[Measured]], cores: int) -> int:
    rounds = args.rounds
    print()
    _report.print_header(
        f"{'name':<12} {'req/s':>8} {'accepted/s':>10} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'non-2xx':>7} {'sock err':>8} {'2xx':>8} {'new rows':>8}"
    )
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
        med = _report.median
        for name, runs in results.items():
            print(
                f"{name + ' med':<12} {med([m.load.rps for m in runs]):>8,.0f} "
                f"{med([m.accepted_per_s for m in runs]):>10,.0f} {med([m.load.p50_ms for m in runs]):>7.2f} "
                f"{med([m.load.p90_ms for m in runs]):>7.2f} {med([m.load.p99_ms for m in runs]):>7.2f}"
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

    _compare(results, "before", "receiver", "the change, tracing off")
    _compare(results, "receiver", "receiver+otel", "tracing on, every request sampled, OTLP/HTTP to a discarding sink")

    failures = 0
    rec, base = results.get("receiver"), results.get("baseline")
    rec_rps = _report.median([m.load.rps for m in rec]) if rec else None
    base_rps = _report.median([m.load.rps for m in base]) if base else None
    ratio = rec_rps / base_rps if rec_rps is not None and base_rps else None
    if ratio is not None:
        print(f"\nratio receiver/baseline (req/s): {ratio:.2f}" + (" (medians)" if rounds > 1 else ""))
    if rec:
        accepted = _report.median([m.accepted_per_s for m in rec])
        p99 = _report.median([m.load.p99_ms for m in rec])
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


def _compare(results: dict[str, list[Measured]], first: str, second: str, what: str) -> None:
    """`second` against `first` (medians of the rounds): req/s and p99, and the cost in req/s."""
    a, b = results.get(first), results.get(second)
    if not a or not b:
        return
    med = _report.median
    rps_a, rps_b = med([m.load.rps for m in a]), med([m.load.rps for m in b])
    p99_a, p99_b = med([m.load.p99_ms for m in a]), med([m.load.p99_ms for m in b])
    cost = (1 - rps_b / rps_a) * 100 if rps_a else float("nan")
    print(
        f"\n{second} vs {first} ({what}): {rps_b:,.0f} vs {rps_a:,.0f} req/s = {rps_b / rps_a:.3f}x"
        f" ({cost:+.1f} % cost), p99 {p99_b:.2f} vs {p99_a:.2f} ms"
        + (
            f" (medians of {len(b)} rounds; per round: "
            + ", ".join(f"{mb.load.rps / ma.load.rps:.3f}x" for ma, mb in zip(a, b, strict=False))
            + ")"
            if len(b) > 1
            else ""
        )
    )
