"""What bench/chaos.py found: the subscriber's records held against what the sender knows was
acknowledged and against the outbox, per sink (the HTTP subscriber, the JetStream consumer).

Definitions, per sink:
- lost: an event a subscriber must get (`Plan.expected` of a job whose webhooks were all
  answered 2xx) that never arrived, after the drain;
- duplicate side effect: the same (job, status) arriving under two different event ids (each
  extra id counts once) - what the receiver's at-most-one-event-per-(job, status) guard prevents;
- order violation: a job whose distinct events, in the order each first arrived, do not follow
  the outbox's `seq` for that job, or go back in status (`processing` after `completed`) - the
  outbound contract is "in order per (subscriber, job)"; a redelivery of an event already seen
  does not count, being a repeat of a delivery the subscriber acknowledged;
- redelivery: an event id arriving again (at-least-once: allowed, counted);
- unexpected: an event for a status the subscriber must not get (the late `processing` of a
  reordered job) or for a job that was never sent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import _report

SINKS = ("http", "nats")
_RANK = {"processing": 2, "completed": 3, "failed": 3}


@dataclass
class SinkFigures:
    arrivals: int = 0
    distinct: int = 0
    expected: int = 0
    lost: int = 0
    duplicate_side_effects: int = 0
    order_violations: int = 0
    redeliveries: int = 0
    unexpected: int = 0
    not_in_outbox: int = 0
    examples: list[str] = field(default_factory=list)

    def example(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)


def analyse(
    truth: Mapping[str, Sequence[str]],
    records: Iterable[Sequence[Any]],
    seqs: Mapping[str, int],
) -> dict[str, SinkFigures]:
    """`records`: (sink, event id, job id, status, arrival) in arrival order; `seqs`: the outbox
    `seq` of each event id."""
    seen: dict[str, set[str]] = {sink: set() for sink in SINKS}
    firsts: dict[str, dict[str, list[tuple[str, str]]]] = {sink: defaultdict(list) for sink in SINKS}
    figures = {sink: SinkFigures() for sink in SINKS}
    for sink, event_id, job_id, status, _arrival in records:
        figures[sink].arrivals += 1
        if event_id in seen[sink]:
            figures[sink].redeliveries += 1
            continue
        seen[sink].add(event_id)
        firsts[sink][job_id].append((event_id, status))
    for sink, jobs in firsts.items():
        f = figures[sink]
        f.distinct = len(seen[sink])
        for job_id, events in jobs.items():
            _check_job(f, sink, job_id, events, truth.get(job_id), seqs)
        for job_id, expected in truth.items():
            f.expected += len(expected)
            got = {status for _, status in jobs.get(job_id, ())}
            for status in expected:
                if status not in got:
                    f.lost += 1
                    f.example(f"{sink}: {job_id} {status} never arrived")
    return figures


def _check_job(
    f: SinkFigures,
    sink: str,
    job_id: str,
    events: list[tuple[str, str]],
    expected: Sequence[str] | None,
    seqs: Mapping[str, int],
) -> None:
    ids_by_status: dict[str, set[str]] = defaultdict(set)
    for event_id, status in events:
        ids_by_status[status].add(event_id)
        if expected is None or status not in expected:
            f.unexpected += 1
            f.example(f"{sink}: {job_id} {status} ({event_id}) was not expected")
        if event_id not in seqs:
            f.not_in_outbox += 1
    for status, ids in ids_by_status.items():
        if len(ids) > 1:
            f.duplicate_side_effects += len(ids) - 1
            f.example(f"{sink}: {job_id} {status} under {len(ids)} event ids: {sorted(ids)}")
    order = [seqs[event_id] for event_id, _ in events if event_id in seqs]  # the others are counted above
    ranks = [_RANK.get(status, 1) for _, status in events]
    if order != sorted(order) or ranks != sorted(ranks):
        f.order_violations += 1
        f.example(f"{sink}: {job_id} arrived in the order {[status for _, status in events]} (seq {order})")


@dataclass
class Outcome:
    """Everything the run measured: the figures of the table and the JSON."""

    settings: dict[str, Any]
    jobs: int
    acknowledged: int
    faults: dict[str, Any]
    sinks: dict[str, SinkFigures]
    own_exits: int
    checks: dict[str, tuple[int | str, bool]]  # name -> (value, passed)
    sender: dict[str, Any]
    seconds: dict[str, float]

    def total(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.sinks.values())

    @property
    def targets(self) -> dict[str, tuple[int, bool]]:
        figures = {
            "events lost": self.total("lost"),
            "duplicate side effects": self.total("duplicate_side_effects"),
            "order violations": self.total("order_violations"),
            "processes that exited on their own": self.own_exits,
        }
        return {name: (value, value == 0) for name, value in figures.items()}

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.targets.values()) and all(ok for _, ok in self.checks.values())

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = {name: {"value": v, "pass": ok} for name, (v, ok) in self.targets.items()}
        data["checks"] = {name: {"value": v, "pass": ok} for name, (v, ok) in self.checks.items()}
        data["redeliveries"] = self.total("redeliveries")
        data["passed"] = self.passed
        return data


def print_table(outcome: Outcome) -> None:
    faults = outcome.faults
    print()
    _report.print_header(f"{'figure':<36} {'http':>9} {'nats':>9} {'total':>10}   target   result")
    row = "{:<36} {:>9} {:>9} {:>10}   {:<8} {}"
    print(row.format("jobs", "", "", f"{outcome.jobs:,}", "", ""))
    print(row.format("acknowledged webhooks (2xx)", "", "", f"{outcome.acknowledged:,}", "", ""))
    print(row.format("faults", "", "", f"{faults['total']:,}", "", ""))
    print(row.format("  SIGKILL receiver/publisher", "", "", f"{faults['kills']:,}", "", ""))
    print(row.format("    of which while PostgreSQL down", "", "", f"{faults['kills_while_pg_down']:,}", "", ""))
    print(row.format("  PostgreSQL immediate stop + start", "", "", f"{faults['pg_restarts']:,}", "", ""))
    print(row.format("  NATS restarts (SIGTERM/SIGKILL)", "", "", f"{faults['nats_restarts']:,}", "", ""))
    for name, attr in (("events expected", "expected"), ("events received (distinct)", "distinct")):
        values = [getattr(outcome.sinks[s], attr) for s in SINKS]
        print(row.format(name, *(f"{v:,}" for v in values), f"{sum(values):,}", "", ""))
    for name, attr in (
        ("events lost", "lost"),
        ("duplicate side effects", "duplicate_side_effects"),
        ("order violations", "order_violations"),
    ):
        values = [getattr(outcome.sinks[s], attr) for s in SINKS]
        value, ok = outcome.targets[name]
        print(row.format(name, *(f"{v:,}" for v in values), f"{value:,}", "0", _report.verdict(ok)))
    values = [outcome.sinks[s].redeliveries for s in SINKS]
    print(row.format("redeliveries (same event id again)", *(f"{v:,}" for v in values), f"{sum(values):,}", "", ""))
    value, ok = outcome.targets["processes that exited on their own"]
    print(row.format("processes that exited on their own", "", "", f"{value:,}", "0", _report.verdict(ok)))
    print()
    print("checks")
    for name, (check, ok) in outcome.checks.items():
        print(f"  {name:<52} {check!s:>10}   {_report.verdict(ok)}")
    examples = [e for s in SINKS for e in outcome.sinks[s].examples]
    if examples:
        print("\nexamples of what went wrong")
        for line in examples[:10]:
            print(f"  {line}")
    print(f"\nresult: {'PASS' if outcome.passed else 'FAIL'}")
