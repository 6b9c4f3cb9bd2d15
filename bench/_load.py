"""bench/ingest.py's closed-loop load: `wrk -t<threads> --latency` with `_wrk.lua`, or, without wrk
on PATH, `_pyload.py closed` (keep-alive, one request in flight per connection). Either runs as a
child process to completion and comes back as a `LoadResult`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import _bodies
import _processes
import _pyload
import _run

BENCH_DIR = Path(__file__).resolve().parent
WRK_LUA = BENCH_DIR / "_wrk.lua"


@dataclass
class LoadResult:
    tool: str
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wraps: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def run_wrk(
    args: argparse.Namespace, port: int, bodies: Path, duration: float, during: _processes.During | None = None
) -> LoadResult:
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(WRK_LUA),
        f"http://127.0.0.1:{port}{_bodies.WEBHOOK_PATH}",
        "--",
        str(bodies),
        str(args.threads),
        _bodies.WEBHOOK_PATH,
    ]
    return parse_wrk(_processes.run_child(argv, "wrk", timeout=duration + 120, during=during))


def parse_wrk(output: str) -> LoadResult:
    match = re.search(r"^BENCH_RESULT (.*)$", output, re.MULTILINE)
    if match:
        v = {k: float(x) for k, x in (kv.split("=") for kv in match.group(1).split())}
        return LoadResult(
            tool="wrk",
            requests=int(v["requests"]),
            duration_s=v["duration_us"] / 1e6,
            non_2xx=int(v["status"]),
            socket_errors=int(v["connect"] + v["read"] + v["write"] + v["timeout"]),
            p50_ms=v["p50_us"] / 1000,
            p90_ms=v["p90_us"] / 1000,
            p99_ms=v["p99_us"] / 1000,
            max_ms=v["max_us"] / 1000,
            wraps=int(v["wraps"]),
        )

    # Fallback: wrk's own --latency text (rounded to its display precision).
    def ms(text: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]

    try:
        dist = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", output, re.MULTILINE))
        total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", output)
        assert total is not None
        seconds = float(total.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[total.group(3)]
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
        max_ms = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", output)
        return LoadResult(
            tool="wrk",
            requests=int(total.group(1)),
            duration_s=seconds,
            non_2xx=int(non2xx.group(1)) if non2xx else 0,
            socket_errors=sum(int(x) for x in errors.groups()) if errors else 0,
            p50_ms=ms(dist["50"]),
            p90_ms=ms(dist["90"]),
            p99_ms=ms(dist["99"]),
            max_ms=ms(max_ms.group(1)) if max_ms else float("nan"),
        )
    except (AssertionError, KeyError, AttributeError, ValueError):
        raise _run.BenchError(f"could not read wrk's output:\n{output}") from None


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "wrk"
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def run_python(
    args: argparse.Namespace, port: int, bodies: Path, duration: float, during: _processes.During | None = None
) -> LoadResult:
    argv = [
        sys.executable,
        str(_pyload.SCRIPT),
        "closed",
        "--port",
        str(port),
        "--bodies-file",
        str(bodies),
        "--connections",
        str(args.connections),
        "--duration",
        str(duration),
    ]
    output = _processes.run_child(argv, "the Python load generator", timeout=duration + 120, during=during)
    match = re.search(r"^BENCH_JSON (.*)$", output, re.MULTILINE)
    if not match:
        raise _run.BenchError(f"the Python load generator printed no result:\n{output}")
    return LoadResult(**json.loads(match.group(1)))
