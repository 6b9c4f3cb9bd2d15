"""PostgreSQL outages for tests: a proxy in front of the test server that can be closed.

The tests' PostgreSQL (embedded, or DATABASE_URL's) is shared by every test, and the
machine's own must never be stopped: a test takes "its" database away by closing this
proxy instead, and brings it back by opening it again on the same port.

The proxy listens on TCP 127.0.0.1 and forwards to wherever the database URL points:
a Unix socket directory (`?host=/path`, how the embedded server listens) or host:port.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg.conninfo

from tests.brokers import _close, _pipe


class DatabaseProxy:
    """`url` is the proxied DATABASE_URL; `stop()` cuts every connection, `start()` listens again."""

    def __init__(self, database_url: str) -> None:
        info = psycopg.conninfo.conninfo_to_dict(database_url)
        host = str(info.get("host") or "127.0.0.1")
        port = int(info.get("port") or 5432)
        self._socket = str(Path(host) / f".s.PGSQL.{port}") if host.startswith("/") else None
        self._target = (host, port)
        user = quote(str(info.get("user") or "postgres"))
        password = info.get("password")
        self._auth = user + (":" + quote(str(password)) if password else "")
        self._dbname = str(info.get("dbname") or "postgres")
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self.port, "start() the proxy first"
        return f"postgresql://{self._auth}@127.0.0.1:{self.port}/{self._dbname}"

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def __aenter__(self) -> DatabaseProxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self._server is None:
                return
            if self._socket is not None:
                up_reader, upstream = await asyncio.open_unix_connection(self._socket)
            else:
                up_reader, upstream = await asyncio.open_connection(*self._target)
            pipes = [asyncio.ensure_future(_pipe(reader, upstream)), asyncio.ensure_future(_pipe(up_reader, writer))]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass  # stop() cuts connections by cancelling their handlers
        finally:
            self._handlers.discard(task)
            await _close(writer)
            if upstream is not None:
                await _close(upstream)


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def messages(records: list[logging.LogRecord], logger: str, level: int = logging.WARNING) -> list[str]:
    """The messages `logger` (or a child) logged at `level` or above."""
    return [
        r.getMessage() for r in records if (r.name == logger or r.name.startswith(logger + ".")) and r.levelno >= level
    ]
