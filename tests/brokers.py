"""Helpers for tests against real message brokers: reachability checks and a TCP proxy.

The proxy sits between a sink and its broker so a test can cut every
connection (an outage) and let them back in (the broker returns) without
touching the broker that other tests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from types import TracebackType
from urllib.parse import urlsplit

import pytest


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """The host and port a broker URL points at."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_broker(name: str, url: str, default_port: int, env_var: str) -> tuple[str, int]:
    """Skip the test when the broker is not running, or fail it under CI=true where it must be.

    Returns the broker's (host, port).
    """
    host, port = host_port(url, default_port)
    if reachable(host, port):
        return host, port
    reason = f"{name} is not reachable at {host}:{port} (set {env_var} to point the tests at one)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.skip(reason)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target host:port until stopped.

    `stop()` (alias `pause()`) closes the listener and every live connection,
    so clients see the broker vanish; `resume()` listens again on the same
    port. Use as `async with TcpProxy(host, port) as proxy:`.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        """Whether the proxy accepts connections right now."""
        return self._server is not None

    async def start(self) -> None:
        """Listen (on an ephemeral port the first time, on the same port afterwards)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every connection that goes through the proxy."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    pause = stop

    async def resume(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the target, for one client's connection."""
        return await asyncio.open_connection(self.target_host, self.target_port)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            if self._server is None:
                return  # accepted just before stop(): drop it like the rest
            upstream_reader, upstream_writer = await self._open_upstream()
            pipes = [
                asyncio.ensure_future(_pipe(client_reader, upstream_writer)),
                asyncio.ensure_future(_pipe(upstream_reader, client_writer)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            # Cancellation is how stop() cuts the connection; the handler ends here quietly.
            pass
        finally:
            self._handlers.discard(task)
            await _close(client_writer)
            if upstream_writer is not None:
                await _close(upstream_writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await writer.wait_closed()
