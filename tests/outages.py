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
from urllib.parse import quote

import psycopg.conninfo

from tests.brokers import TcpProxy


class DatabaseProxy(TcpProxy):
    """`url` is the proxied DATABASE_URL; `stop()` cuts every connection, `start()` listens again.
    The broker tests' TcpProxy, reaching PostgreSQL on its Unix socket when it listens on one."""

    def __init__(self, database_url: str) -> None:
        info = psycopg.conninfo.conninfo_to_dict(database_url)
        host = str(info.get("host") or "127.0.0.1")
        port = int(info.get("port") or 5432)
        super().__init__(host, port)
        self._socket = str(Path(host) / f".s.PGSQL.{port}") if host.startswith("/") else None
        user = quote(str(info.get("user") or "postgres"))
        password = info.get("password")
        self._auth = user + (":" + quote(str(password)) if password else "")
        self._dbname = str(info.get("dbname") or "postgres")

    @property
    def url(self) -> str:
        assert self.port, "start() the proxy first"
        return f"postgresql://{self._auth}@127.0.0.1:{self.port}/{self._dbname}"

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._socket is not None:
            return await asyncio.open_unix_connection(self._socket)
        return await super()._open_upstream()


def messages(records: list[logging.LogRecord], logger: str, level: int = logging.WARNING) -> list[str]:
    """The messages `logger` (or a child) logged at `level` or above."""
    return [
        r.getMessage() for r in records if (r.name == logger or r.name.startswith(logger + ".")) and r.levelno >= level
    ]
