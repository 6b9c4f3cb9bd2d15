"""The HTTP subscriber of bench/publish.py: a raw asyncio (uvloop) HTTP/1.1 server in its own
process that answers every POST with `200` and no body at once, keeps connections alive and
records `(CLOCK_MONOTONIC, webhook-id)` of every request. `GET /stats` answers the counts so far
as JSON; on SIGTERM it writes the records to --out and exits.

    python bench/_subscriber.py --port P --out FILE [--delay S]

With --delay it answers each request S seconds after it arrived (a slow subscriber).

`Subscriber` starts one and reads it from the benchmark's side.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import signal
import sys
import time
from pathlib import Path
from typing import Any

import _processes
import _run
import orjson
import uvloop

SUBSCRIBER_PATH = "/hooks/doitong"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_subscriber.py")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    return uvloop.run(_serve(args.port, args.out, args.delay))


async def _serve(port: int, out: Path, delay: float = 0.0) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    times: list[float] = []
    ids: list[bytes] = []
    seen: set[bytes] = set()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    clock = time.monotonic

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.buffer = bytearray()

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(self.buffer[:end]).split(b"\r\n")
                length = 0
                event_id = b""
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    lowered = name.strip().lower()
                    if lowered == b"content-length":
                        length = int(value)
                    elif lowered == b"webhook-id":
                        event_id = value.strip()
                total = end + 4 + length
                if len(self.buffer) < total:
                    return
                del self.buffer[:total]
                if lines[0].startswith(b"GET /stats"):
                    body = orjson.dumps(
                        {
                            "count": len(times),
                            "distinct": len(seen),
                            "first": times[0] if times else None,
                            "last": times[-1] if times else None,
                        }
                    )
                    self.transport.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                        % (len(body), body)
                    )
                    continue
                times.append(clock())
                ids.append(event_id)
                seen.add(event_id)
                if delay:
                    loop.call_later(delay, self.answer)  # answers keep the requests' order
                else:
                    self.transport.write(ok)

        def answer(self) -> None:
            if not self.transport.is_closing():
                self.transport.write(ok)

    server = await loop.create_server(Server, "127.0.0.1", port, backlog=1024)
    await stop.wait()
    server.close()
    out.write_bytes(orjson.dumps({"times": times, "ids": [i.decode() for i in ids]}))
    return 0


class Subscriber:
    """A subscriber process, started and answering; `url` is what a subscription points at."""

    def __init__(self, tmp: Path, tag: str, delay: float = 0.0) -> None:
        self.port = _processes.free_port()
        self.out = tmp / f"subscriber-{tag}.json"
        self.proc = _processes.Proc(
            f"subscriber ({tag})",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--port",
                str(self.port),
                "--out",
                str(self.out),
                "--delay",
                str(delay),
            ],
            _processes.child_env(),
            tmp / f"subscriber-{tag}.log",
        )
        _processes.wait_http(self.port, "/stats", self.proc, timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SUBSCRIBER_PATH}"

    def stats(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/stats")
            data: dict[str, Any] = orjson.loads(conn.getresponse().read())
            return data
        finally:
            conn.close()

    def arrivals(self) -> tuple[int, float | None, float | None]:
        """Requests so far, and the first and last arrival (monotonic): a drain's sink count."""
        s = self.stats()
        return int(s["count"]), s["first"], s["last"]

    def finish(self) -> tuple[list[float], list[str]]:
        self.proc.stop(timeout=30)
        try:
            data = orjson.loads(self.out.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise _run.BenchError(f"the subscriber left no records ({exc}):\n{self.proc.tail()}") from None
        return data["times"], data["ids"]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
