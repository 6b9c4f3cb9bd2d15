"""The hostile clients of bench/resources.py, run as a child process so their CPU is their own:

    python bench/_attack.py KIND --port P --connections N --out FILE [--pause S]

KIND is one of
    slowloris   N connections that send a request head one short header line every 2 s
    slowbody    N connections that send a whole head (Content-Length: 100000), then a body
                byte every 2 s
    headers     N connections that each stream a 64 MB header as fast as the server reads it
    flood       N connections that connect and say nothing

Each connection, when the server closes it, is opened again (after --pause seconds, at once by
default), so N stay open (or trying) until SIGTERM. Then FILE gets what happened: connections opened, closed by the
server, the status lines it answered with, how long the server let each one live, and for
`headers` how many bytes it read before closing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

KINDS = ("slowloris", "slowbody", "headers", "flood")
TRICKLE_EVERY = 2.0
HUGE_HEADER = 64 * 1024 * 1024
CHUNK = b"a" * 65536


@dataclass
class Tally:
    opened: int = 0
    refused_at_connect: int = 0
    closed_by_server: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    lifetimes: list[float] = field(default_factory=list)
    header_bytes_sent: list[int] = field(default_factory=list)
    open_now: int = 0
    most_open: int = 0


async def one(kind: str, port: int, tally: Tally, pause: float) -> None:
    """One connection of `kind`, opened again (after `pause` s) whenever the server closes it."""
    while True:
        if tally.opened and pause:
            await asyncio.sleep(pause)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            tally.refused_at_connect += 1
            await asyncio.sleep(0.1)
            continue
        tally.opened += 1
        tally.open_now += 1
        tally.most_open = max(tally.most_open, tally.open_now)
        started = time.monotonic()
        answer = asyncio.ensure_future(reader.read(256))
        sent = 0
        try:
            if kind == "slowbody":
                writer.write(b"POST /webhooks/doitong HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{")
            elif kind in ("slowloris", "headers"):
                writer.write(b"POST /webhooks/doitong HTTP/1.1\r\nhost: x\r\nx-pad: ")
            while not answer.done():
                if kind == "headers" and sent < HUGE_HEADER:
                    writer.write(CHUNK)
                    sent += len(CHUNK)
                    with contextlib.suppress(ConnectionError):
                        await asyncio.wait_for(writer.drain(), 30)
                    continue
                await asyncio.wait([answer], timeout=TRICKLE_EVERY)
                if not answer.done() and kind == "slowloris":
                    writer.write(b"a\r\nx-pad: ")
                elif not answer.done() and kind == "slowbody":
                    writer.write(b" ")
            first = b""
            with contextlib.suppress(ConnectionError):
                first = answer.result()
            tally.closed_by_server += 1
            tally.lifetimes.append(time.monotonic() - started)
            tally.statuses[first.split(b"\r\n", 1)[0].decode("latin-1") or "(closed, no answer)"] += 1
            if kind == "headers":
                tally.header_bytes_sent.append(sent)
        except (TimeoutError, ConnectionError):
            tally.closed_by_server += 1
            tally.statuses["(reset)"] += 1
        finally:
            tally.open_now -= 1
            answer.cancel()
            writer.close()


async def attack(kind: str, port: int, connections: int, out: Path, pause: float) -> None:
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    workers = []
    for _ in range(connections):  # opened over ~1 s, not in one burst of SYNs
        workers.append(asyncio.ensure_future(one(kind, port, tally, pause)))
        await asyncio.sleep(1.0 / connections)
    await stop.wait()
    # The tally first: cancelling a thousand connections may take longer than we are given.
    out.write_bytes(
        orjson.dumps(
            {
                "kind": kind,
                "opened": tally.opened,
                "refused_at_connect": tally.refused_at_connect,
                "closed_by_server": tally.closed_by_server,
                "statuses": dict(tally.statuses),
                "lifetimes": sorted(tally.lifetimes),
                "header_bytes_sent": sorted(tally.header_bytes_sent),
                "most_open": tally.most_open,
            }
        )
    )
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_attack.py")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds before opening a closed one again")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(attack(args.kind, args.port, args.connections, args.out, args.pause))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
