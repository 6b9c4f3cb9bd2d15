"""Connections to PostgreSQL, and the boundary where driver errors become ours.

Two ways in, on purpose:
- an SQLAlchemy AsyncEngine for everything but the hot path (CLI, readiness,
  endpoint refresh, metrics), written with SQLAlchemy Core;
- a psycopg AsyncConnectionPool for the webhook transaction, which is one
  prepared statement (`receiver_ingest(...)`) and gains nothing from a query
  builder but its overhead (bench/ingest.py measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
import psycopg.errors
import sqlalchemy.exc
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from receiver.core.config import Settings
from receiver.core.errors import ConfigError, DatabaseUnavailable

APPLICATION_NAME = "doitong-receiver"
T = TypeVar("T")


def sqlalchemy_url(database_url: str) -> str:
    """`postgresql://…` (or `postgres://…`) as SQLAlchemy's psycopg 3 URL."""
    _, _, rest = database_url.partition("://")
    return "postgresql+psycopg://" + rest


def libpq_url(database_url: str) -> str:
    """The URL as libpq reads it (psql, psycopg)."""
    _, _, rest = database_url.partition("://")
    return "postgresql://" + rest


def create_engine(database_url: str, *, pool_size: int = 5, timeout: timedelta | None = None) -> AsyncEngine:
    seconds = (timeout or timedelta(seconds=5)).total_seconds()
    return create_async_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=seconds,
        pool_pre_ping=True,
        connect_args={
            "application_name": APPLICATION_NAME,
            "connect_timeout": max(1, round(seconds)),
        },
    )


class PooledConnection(psycopg.AsyncConnection[Any]):
    """A pool's connection, keeping one cursor for the statement it runs on every call.

    Making a cursor per call cost the webhook hot path ~8 µs of its one thread. The
    cursor lives on the connection, not in a side table keyed by it: a cursor refers to
    its connection, so a side table would keep every connection the pool ever replaced
    (and the last body each sent) alive.
    """

    _kept: psycopg.AsyncCursor[Any] | None = None

    def kept_cursor(self) -> psycopg.AsyncCursor[Any]:
        if self._kept is None or self._kept.closed:
            self._kept = self.cursor()
        return self._kept


def create_pool(database_url: str, *, size: int, timeout: timedelta, name: str = "ingest") -> AsyncConnectionPool:
    """The hot-path pool. Not opened: call `await pool.open(wait=False)`."""
    seconds = timeout.total_seconds()
    return AsyncConnectionPool(
        libpq_url(database_url),
        connection_class=PooledConnection,
        min_size=size,
        max_size=size,
        timeout=seconds,
        open=False,
        reconnect_timeout=24 * 3600,
        kwargs={
            "application_name": APPLICATION_NAME,
            "connect_timeout": max(1, round(seconds)),
            # Every statement on this pool is a whole transaction by itself (receiver_ingest(),
            # the publisher's claim/complete): autocommit saves the BEGIN and COMMIT round trips.
            "autocommit": True,
        },
        name=name,
    )


def unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    """The DatabaseUnavailable a driver error means ("the database is not there"), else None."""
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedFunction):
        return DatabaseUnavailable("the schema is not migrated; run `receiver migrate`")
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return DatabaseUnavailable(_first_line(exc))
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError | sqlalchemy.exc.TimeoutError):
        return DatabaseUnavailable(_first_line(getattr(exc, "orig", None) or exc))
    return None


# libpq's start-up refusals that no wait cures: the URL names a role, password or database the
# server does not have. psycopg gives them no SQLSTATE (the connection never started), so they
# are told apart by libpq's words. "The database system is starting up", "too many clients",
# a refused connection or a name that does not resolve stay outages, waited out.
_MISCONFIGURED = re.compile(
    r'password authentication failed|role "[^"]*" does not exist|database "[^"]*" does not exist'
    r"|no pg_hba\.conf entry|no password supplied"
)


def check_configured(exc: DatabaseUnavailable) -> None:
    """Raise ConfigError naming DATABASE_URL when `exc` is a refusal no retry can cure. For
    start-up, where waiting on a wrong password forever would hide the mistake."""
    if _MISCONFIGURED.search(str(exc)):
        raise ConfigError(f"DATABASE_URL: the server refused it ({exc}); fix the role, password or database name")


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Driver errors that mean "the database is not there" become DatabaseUnavailable."""
    try:
        yield
    except Exception as exc:
        translation = unavailable(exc)
        if translation is None:
            raise
        raise translation from exc


@contextlib.asynccontextmanager
async def begin(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction on the engine, with driver errors translated."""
    async with translated(), engine.begin() as conn:
        yield conn


def run_admin(settings: Settings, action: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """For commands: run `action` in one transaction against DATABASE_URL."""

    async def go() -> T:
        engine = create_engine(settings.require_database_url(), pool_size=1, timeout=settings.db_timeout)
        try:
            async with begin(engine) as conn:
                return await action(conn)
        finally:
            await engine.dispose()

    return asyncio.run(go())


async def driver_connection(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under an SQLAlchemy one, for statements written in plain SQL
    (they run inside the SQLAlchemy transaction)."""
    raw = await conn.get_raw_connection()
    driver: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
    return driver
