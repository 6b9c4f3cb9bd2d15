"""NATS JetStream from bench/publish.py's synchronous code: the streams each drain publishes to
(made with the configuration the receiver's sink makes, deleted afterwards), and their state
(message count, first and last message time) as the drain's sink count.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar

import _run
import nats
import orjson
from nats.js.api import StorageType, StreamConfig

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
T = TypeVar("T")


class Nats:
    """nats-py from synchronous code: one connection on an event loop in a daemon thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-nats", daemon=True)
        self.thread.start()
        self.nc = self.call(nats.connect(self.url, name="bench-publish", connect_timeout=3, max_reconnect_attempts=2))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _add_stream(self, name: str, subjects: str) -> None:
        jsm = self.nc.jsm()
        with contextlib.suppress(Exception):
            await jsm.delete_stream(name)
        # The configuration receiver/outbound/sinks/nats.py creates when the stream is missing.
        await jsm.add_stream(StreamConfig(name=name, subjects=[subjects], storage=StorageType.FILE))

    async def _delete_stream(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self.nc.jsm().delete_stream(name)

    async def _state(self, name: str) -> dict[str, Any]:
        reply = await self.nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=5)
        state: dict[str, Any] = orjson.loads(reply.data).get("state", {})
        return state

    def add_stream(self, name: str, subjects: str) -> None:
        self.call(self._add_stream(name, subjects))

    def delete_stream(self, name: str) -> None:
        self.call(self._delete_stream(name))

    def stream_state(self, name: str) -> tuple[int, float | None, float | None]:
        """Messages, and the first and last message times on this process's monotonic clock."""
        state = self.call(self._state(name))
        offset = time.time() - time.monotonic()
        count = int(state.get("messages", 0))
        if not count:
            return 0, None, None
        return count, _rfc3339(state["first_ts"]) - offset, _rfc3339(state["last_ts"]) - offset

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.nc.close(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)


def _rfc3339(text: str) -> float:
    """nats-server's timestamps carry nanoseconds; Python reads microseconds."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not match:
        raise _run.BenchError(f"cannot read NATS timestamp {text!r}")
    base, fraction, zone = match.groups()
    moment = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return moment.timestamp() + float("0." + (fraction or "0"))
