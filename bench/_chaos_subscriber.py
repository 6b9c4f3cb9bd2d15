"""The verifying subscriber of bench/chaos.py, a child process with two ears:

- an HTTP endpoint (aiohttp) that checks each delivery's Standard Webhooks signature with the
  `standardwebhooks` library, refuses --fail-rate of them with 503 on purpose (so the publisher's
  retries are exercised too) and records the rest;
- a JetStream consumer (durable, pull, explicit acks) on the receiver's stream, which records
  each message before acking it, so a message redelivered after a lost ack is seen twice.

A record is (sink, event id, job id, status, arrival on CLOCK_MONOTONIC), in arrival order.
`GET /stats` answers the counts so far; on SIGTERM the records go to --out as JSON.

    python bench/_chaos_subscriber.py --port P --nats-url URL --out FILE  (secret in $CHAOS_SUBSCRIBER_SECRET)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _processes
import _run
import nats
import nats.errors
import nats.js.errors
import orjson
import uvloop
from aiohttp import web
from nats.aio.msg import Msg
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PATH = "/hooks/chaos"
DURABLE = "chaos-verifier"
SECRET_VARIABLE = "CHAOS_SUBSCRIBER_SECRET"

Record = tuple[str, str, str, str, float]  # sink, event id, job id, status, arrival


@dataclass
class Ears:
    fail_rate: float
    records: list[Record] = field(default_factory=list)
    seen: dict[str, set[str]] = field(default_factory=lambda: {"http": set(), "nats": set()})
    arrivals: dict[str, int] = field(default_factory=lambda: {"http": 0, "nats": 0})
    bad_signatures: int = 0
    malformed: int = 0
    others: int = 0
    refused: int = 0

    def record(self, sink: str, event: Any) -> None:
        try:
            if not str(event["type"]).startswith("job."):
                self.others += 1  # operational news, if a subscription asked for it
                return
            event_id, data = str(event["id"]), event["data"]
            self.records.append((sink, event_id, str(data["id"]), str(data["status"]), time.monotonic()))
        except (KeyError, TypeError):
            self.malformed += 1
            return
        self.seen[sink].add(event_id)
        self.arrivals[sink] += 1

    def stats(self) -> dict[str, Any]:
        return {
            "arrivals": self.arrivals,
            "distinct": {sink: len(ids) for sink, ids in self.seen.items()},
            "bad_signatures": self.bad_signatures,
            "malformed": self.malformed,
            "others": self.others,
            "refused": self.refused,
        }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_chaos_subscriber.py")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--stream", default="DOITONG")
    parser.add_argument("--subjects", default="doitong.>")
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    return uvloop.run(_serve(args, os.environ[SECRET_VARIABLE]))


async def _serve(args: argparse.Namespace, secret: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    ears = Ears(args.fail_rate)
    verifier = Webhook(secret)

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = verifier.verify(body, dict(request.headers))
        except (WebhookVerificationError, ValueError):
            ears.bad_signatures += 1
            return web.Response(status=401)
        if ears.fail_rate and random.random() < ears.fail_rate:
            ears.refused += 1
            return web.Response(status=503)
        ears.record("http", event)
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(ears.stats()), content_type="application/json")

    app = web.Application()
    app.router.add_post(PATH, hook)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024).start()
    consumer = asyncio.create_task(_consume(args, ears, stop), name="jetstream-consumer")
    await stop.wait()
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    await runner.cleanup()
    args.out.write_bytes(orjson.dumps({"records": ears.records, **ears.stats()}))
    return 0


async def _consume(args: argparse.Namespace, ears: Ears, stop: asyncio.Event) -> None:
    """Records every message of the stream, through NATS restarts: nats-py reconnects by itself
    and the durable consumer remembers what was acked; until the publisher has made the stream,
    subscribing is retried."""
    nc = None
    while nc is None:
        with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
            nc = await nats.connect(
                args.nats_url,
                name="chaos-verifier",
                connect_timeout=2,
                reconnect_time_wait=0.5,
                max_reconnect_attempts=-1,
                error_cb=_quiet,  # nats-py's default logs a traceback for each failed reconnect
            )
        if nc is None:
            await asyncio.sleep(0.5)
    js = nc.jetstream(timeout=5)
    try:
        while True:
            try:
                psub = await js.pull_subscribe(args.subjects, durable=DURABLE, stream=args.stream)
                break
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.5)
        while True:
            try:
                messages = await psub.fetch(256, timeout=1)
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.05)  # nothing new, or NATS away: fetch again
                continue
            for message in messages:
                _take(message, ears)
                with contextlib.suppress(nats.errors.Error):
                    await message.ack()
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _quiet(exc: Exception) -> None:
    """The NATS restarts are the benchmark's own doing."""


def _take(message: Msg, ears: Ears) -> None:
    try:
        event = orjson.loads(message.data)
    except orjson.JSONDecodeError:
        ears.malformed += 1
        return
    if (message.headers or {}).get("Nats-Msg-Id") != event.get("id"):
        ears.malformed += 1
        return
    ears.record("nats", event)


class Subscriber:
    """The subscriber process, started and answering; `url` is its HTTP subscription."""

    def __init__(self, tmp: Path, nats_url: str, secret: str, fail_rate: float) -> None:
        self.port = _processes.free_port()
        self.out = tmp / "subscriber.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port)]
        argv += ["--nats-url", nats_url, "--fail-rate", str(fail_rate), "--out", str(self.out)]
        env = _processes.child_env(**{SECRET_VARIABLE: secret})
        self.proc = _processes.Proc("verifying subscriber", argv, env, tmp / "subscriber.log")
        _processes.wait_http(self.port, "/stats", self.proc, timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def stats(self) -> dict[str, Any]:
        self.proc.check()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/stats")
            data: dict[str, Any] = orjson.loads(conn.getresponse().read())
            return data
        finally:
            conn.close()

    def finish(self) -> dict[str, Any]:
        """Stop it and read what it recorded."""
        self.proc.stop(timeout=60)
        try:
            data: dict[str, Any] = orjson.loads(self.out.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise _run.BenchError(f"the subscriber left no records ({exc}):\n{self.proc.tail()}") from None
        return data


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
