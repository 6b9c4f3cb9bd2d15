"""A real HTTP subscriber for tests: records every request and answers from a script."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0  # what we answered


@dataclass
class Subscriber:
    """Answers `script[path]` in turn (then `default`), optionally after `delay` seconds."""

    script: dict[str, list[int | tuple[int, dict[str, str]]]] = field(default_factory=dict)
    default: int = 200
    delay: float = 0.0
    jitter: float = 0.0  # extra random delay, up to this many seconds
    fail_rate: float = 0.0  # answer 500 at random this often
    received: list[Received] = field(default_factory=list)
    on_request: Callable[[Received], None] | None = None
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        item = Received(request.path, dict(request.headers), await request.read(), time.monotonic())
        self.received.append(item)
        if self.on_request is not None:
            self.on_request(item)
        if self.delay or self.jitter:
            await asyncio.sleep(self.delay + random.uniform(0, self.jitter))
        queue = self.script.get(request.path)
        answer: int | tuple[int, dict[str, str]] = queue.pop(0) if queue else self.default
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        if self.fail_rate and random.random() < self.fail_rate:
            status = 500
        item.status = status
        return web.Response(status=status, headers=headers, text="ok")

    async def start(self) -> Subscriber:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def accepted(self) -> list[Received]:
        """Requests we answered 2xx, in the order they arrived."""
        return [r for r in self.received if 200 <= r.status < 300]

    def bodies(self, path: str | None = None) -> list[bytes]:
        return [r.body for r in self.received if path is None or r.path == path]

    async def wait_for(self, count: int, path: str | None = None, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            got = [r for r in self.received if path is None or r.path == path]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.02)
