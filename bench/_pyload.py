"""The Python load generators, each run as a child process so that its CPU is its own:

    python bench/_pyload.py closed --port P --bodies-file F --connections C --duration S
        bench/ingest.py without wrk: closed loop, HTTP/1.1 keep-alive on raw sockets, one request
        in flight per connection, cycling through the bodies; prints `BENCH_JSON {...}`
        (requests, duration, non-2xx, socket errors, exact percentiles, wraps).

    python bench/_pyload.py steady --port P --bodies F --rate R --out FILE
        bench/publish.py end to end: open loop, request i leaves at start + i/rate on an idle
        keep-alive connection (a new one when none is idle), whatever the answers do; writes when
        each was sent and answered (CLOCK_MONOTONIC), its status and the `event_id` it was given.

The body file has one `sha256=<hex> <json>` line per request (bench/_bodies.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import _bodies
import orjson

SCRIPT = Path(__file__).resolve()  # what the benchmarks run: [sys.executable, SCRIPT, "closed" | "steady", ...]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_pyload.py")
    kinds = parser.add_subparsers(dest="kind", required=True)
    closed = kinds.add_parser("closed", help="closed loop for bench/ingest.py; prints BENCH_JSON")
    closed.add_argument("--port", type=int, required=True)
    closed.add_argument("--bodies-file", type=Path, required=True)
    closed.add_argument("--connections", type=int, required=True)
    closed.add_argument("--duration", type=float, required=True)
    steady = kinds.add_parser("steady", help="open loop at --rate for bench/publish.py; writes --out")
    steady.add_argument("--port", type=int, required=True)
    steady.add_argument("--bodies", type=Path, required=True)
    steady.add_argument("--rate", type=float, required=True)
    steady.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import uvloop

    if args.kind == "closed":
        requests = _bodies.signed_requests(args.bodies_file, args.port)
        result = uvloop.run(_closed(args.port, requests, args.connections, args.duration))
        print("BENCH_JSON " + json.dumps(result), flush=True)
    else:
        requests = _bodies.signed_requests(args.bodies, args.port)
        records = uvloop.run(_steady(args.port, requests, args.rate))
        args.out.write_bytes(orjson.dumps(records))
    return 0


async def _closed(port: int, requests: list[bytes], connections: int, duration: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    state = {"next": 0, "non_2xx": 0, "errors": 0, "wraps": 0}
    stop_at = [float("inf")]
    perf = time.perf_counter

    class Client(asyncio.Protocol):
        def __init__(self, finished: asyncio.Future[None]) -> None:
            self.finished = finished
            self.buffer = b""
            self.need = -1
            self.status = 0
            self.sent_at = 0.0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.send()

        def send(self) -> None:
            if perf() >= stop_at[0]:
                self.transport.close()
                return
            i = state["next"]
            state["next"] = i + 1
            if i >= len(requests):
                state["next"], i = 1, 0
                state["wraps"] += 1
            self.sent_at = perf()
            self.transport.write(requests[i])

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                if self.need < 0:
                    end = self.buffer.find(b"\r\n\r\n")
                    if end < 0:
                        return
                    head = self.buffer[:end].decode("latin-1").split("\r\n")
                    self.status = int(head[0].split(" ", 2)[1])
                    length = 0
                    for line in head[1:]:
                        name, _, value = line.partition(":")
                        if name.strip().lower() == "content-length":
                            length = int(value)
                    self.need = end + 4 + length
                if len(self.buffer) < self.need:
                    return
                self.buffer = self.buffer[self.need :]
                self.need = -1
                now = perf()
                if now <= stop_at[0]:
                    latencies.append(now - self.sent_at)
                    if not 200 <= self.status < 400:
                        state["non_2xx"] += 1
                self.send()

        def connection_lost(self, exc: Exception | None) -> None:
            if perf() < stop_at[0]:
                state["errors"] += 1
            if not self.finished.done():
                self.finished.set_result(None)

    started = perf()
    stop_at[0] = started + duration
    finished: list[asyncio.Future[None]] = []
    for _ in range(connections):
        future: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(lambda f=future: Client(f), "127.0.0.1", port)  # type: ignore[misc]
            finished.append(future)
        except OSError:
            state["errors"] += 1
    await asyncio.sleep(max(0.0, stop_at[0] - perf()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*finished), timeout=15)
    elapsed = min(perf(), stop_at[0]) - started
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000

    return {
        "tool": "python",
        "requests": len(latencies),
        "duration_s": elapsed,
        "non_2xx": state["non_2xx"],
        "socket_errors": state["errors"],
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
        "wraps": state["wraps"],
    }


async def _steady(port: int, requests: list[bytes], rate: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    clock = time.monotonic
    n = len(requests)
    sent = [0.0] * n
    done = [0.0] * n
    status = [0] * n
    event_ids: list[str | None] = [None] * n
    idle: list[Client] = []
    pending = [n]
    errors = [0]
    finished = loop.create_future()

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.buffer = b""
            self.current = -1
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def send(self, i: int) -> None:
            assert self.transport is not None
            self.current = i
            sent[i] = clock()
            self.transport.write(requests[i])

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].split(b"\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            now = clock()
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            i, self.current = self.current, -1
            done[i] = now
            status[i] = int(head[0].split(b" ", 2)[1])
            with contextlib.suppress(ValueError, AttributeError):
                event_ids[i] = orjson.loads(body).get("event_id")
            idle.append(self)
            pending[0] -= 1
            if pending[0] == 0 and not finished.done():
                finished.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            if self in idle:
                idle.remove(self)
            if self.current >= 0:
                errors[0] += 1
                pending[0] -= 1
                self.current = -1
                if pending[0] == 0 and not finished.done():
                    finished.set_result(None)

    async def connect() -> Client:
        _, client = await loop.create_connection(Client, "127.0.0.1", port)
        return client

    for client in await asyncio.gather(*(connect() for _ in range(32))):
        idle.append(client)
    start = clock() + 0.1
    late = 0.0
    for i in range(n):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        try:
            client = idle.pop() if idle else await connect()
        except OSError:
            errors[0] += 1
            pending[0] -= 1
            continue
        client.send(i)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished, timeout=30)
    return {
        "start": start,
        "sent": sent,
        "done": done,
        "status": status,
        "event_ids": event_ids,
        "errors": errors[0],
        "max_late_ms": late * 1000,
        "connections": len(idle),
    }


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
