"""bench/console.py's ingest side: signed webhooks at a steady rate (`_pyload.py steady`, open loop)
into the server that also serves the console, once with nobody on the console and once with
readers requesting its pages back to back; the answer times' p50/p99 of each, and the ratio.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _bodies
import _cpu
import _processes
import _pyload
import _report
import _run
import orjson


@dataclass
class IngestRun:
    label: str
    sent: int = 0
    ok: int = 0
    non_2xx: int = 0
    errors: int = 0
    max_late_ms: float = 0.0
    answers: list[float] = field(default_factory=list)  # ms, sorted
    statuses: dict[int, int] = field(default_factory=dict)  # the non-2xx answers by status (0: none)
    console_requests: int = 0
    console_failures: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] | None = None  # cores busy per group over the measured window
    disturbed: bool = False  # other processes on the machine were busy (see console.py --max-other)

    def p(self, q: float) -> float:
        return _report.percentile(self.answers, q)


def bodies(tmp: Path, secret: str, count: int, tag: str) -> Path:
    """`count` signed bodies, each a distinct job (a first delivery, answered "accepted")."""
    path = tmp / f"ingest-{tag}.txt"
    nonce = f"console{tag}{int(time.time()) & 0xFFFFFF:06x}"
    _bodies.write(path, (_bodies.ingest_document(i, nonce) for i in range(count)), secret)
    return path


def run(
    label: str,
    port: int,
    body_file: Path,
    *,
    rate: float,
    warmup: float,
    tmp: Path,
    server_pid: int,
    console_pid: int | None,
    database_url: str,
    alongside: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> IngestRun:
    """Send every body in `body_file` at `rate` per second; the answers to those scheduled in the
    first `warmup` seconds are not counted. `alongside()` is entered before the load starts and
    left after it ends (the console readers). The CPU is sampled over the measured seconds: the
    server, its database's PostgreSQL processes, the load generator, this process (the readers),
    and whatever else the machine ran."""
    out = tmp / f"records-{label}.json"
    argv = [sys.executable, str(_pyload.SCRIPT), "steady", "--port", str(port), "--bodies", str(body_file)]
    result = IngestRun(label)
    seconds = sum(1 for _ in body_file.open("rb")) / rate

    def probe_cpu(loadgen_pid: int) -> None:
        if not _cpu.CpuProbe.available() or seconds - warmup < 3:
            return
        time.sleep(warmup + 0.5)  # the generator reads its bodies first (well under a second), then 0.1 s
        probe = _cpu.CpuProbe(
            {
                "server": _cpu.descendants(server_pid),
                "postgres": _cpu.postgres_pids(database_url),
                "loadgen": {loadgen_pid},
                "readers": {os.getpid()},
                **({"console": _cpu.descendants(console_pid)} if console_pid is not None else {}),
            }
        )
        time.sleep(seconds - warmup - 1.0)
        result.cpu = probe.finish()

    with alongside() if alongside is not None else contextlib.nullcontext() as readers:
        _processes.run_child(
            [*argv, "--rate", str(rate), "--out", str(out)],
            "the load generator",
            timeout=600,
            during=probe_cpu,
            env=_processes.child_env(),
        )
    if readers is not None:
        result.console_requests = readers.requests
        result.console_failures = dict(readers.failures)
    records = orjson.loads(out.read_bytes())
    start: float = records["start"]
    answers = []
    for i, code in enumerate(records["status"]):
        if start + i / rate < start + warmup:
            continue
        result.sent += 1
        if code == 0:
            result.statuses[0] = result.statuses.get(0, 0) + 1
            continue
        if 200 <= code < 300:
            result.ok += 1
            answers.append((records["done"][i] - records["sent"][i]) * 1000)
        else:
            result.non_2xx += 1
            result.statuses[code] = result.statuses.get(code, 0) + 1
    result.errors = records["errors"]
    result.max_late_ms = records["max_late_ms"]
    result.answers = sorted(answers)
    _run.log(
        f"ingest {label}: {result.ok:,}/{result.sent:,} 2xx, p50 {result.p(50):.2f} ms, p99 {result.p(99):.2f} ms"
        + (f", console: {result.console_requests:,} pages" if readers is not None else "")
    )
    return result
