"""The PostgreSQL side of a benchmark: which server, a fresh database per measurement (dropped
whatever happens), and the upkeep both systems get alike before and while they are measured.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import _run
import psycopg
from psycopg import sql

from receiver.core import embedded_postgres

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url(given: str | None) -> str:
    """--database-url, else $DATABASE_URL, else the local server."""
    return given or os.environ.get("DATABASE_URL") or DEFAULT_ADMIN_URL


def server(
    given: str | None, *, embedded: bool, home: Path, stack: contextlib.ExitStack[bool | None]
) -> tuple[str, str]:
    """The admin URL to make databases on and where it is ("server" or "embedded"): the server
    asked for, or an embedded PostgreSQL when asked (`embedded`) or when none was named and the
    local one does not answer. The embedded one is stopped when `stack` closes."""
    url = admin_url(given)
    if not embedded and reachable(url):
        return url, "server"
    if not embedded and (given or os.environ.get("DATABASE_URL")):
        raise _run.BenchError(f"cannot connect to {url}")
    _run.log(
        "starting an embedded PostgreSQL (receiver.core.embedded_postgres)"
        + ("" if embedded else f": none answers at {redact(url)}")
    )
    started, _ = embedded_postgres.start(home, "postgres")
    stack.callback(_stop_embedded, started)
    return started.get_uri("postgres"), "embedded"


def _stop_embedded(server: Any) -> None:
    for method in ("stop", "cleanup", "shutdown"):
        fn = getattr(server, method, None)
        if callable(fn):
            with contextlib.suppress(Exception):
                fn()
            return


def reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def with_database(url: str, database: str) -> str:
    """`url` pointing at `database` instead (query, e.g. ?host=/socket, kept)."""
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql+psycopg") else parts.scheme
    return urlunsplit((scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")))
    return url


@contextlib.contextmanager
def database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh database, dropped on the way out (whatever happened)."""
    ident = sql.Identifier(name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield with_database(admin_url, name)
    finally:
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        except psycopg.Error as exc:
            print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)


def query_one(url: str, statement: str, params: Any = None) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(statement, params).fetchone()
        return row[0] if row else None


def execute_file(url: str, path: Path) -> None:
    """--receiver-sql: run an SQL file (what-if experiments)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(path.read_text().encode())


def checkpoint(url: str) -> None:
    """Flush dirty buffers now rather than in the middle of the next measurement."""
    with contextlib.suppress(psycopg.Error):
        query_one(url, "CHECKPOINT")


def tidy(url: str) -> None:
    """After seeding, the same for both systems: VACUUM ANALYZE each table that has rows (what
    autovacuum would do after a bulk insert), and CHECKPOINT. Empty tables are left never
    analyzed, as autovacuum leaves them: analyzing `deliveries` while it is empty would tell the
    planner it stays tiny, and the claim query then picks a plan that is quadratic in the pending
    deliveries (see bench/README.md)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            ident = sql.Identifier(table)
            if conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident)).fetchone() == (True,):
                conn.execute(sql.SQL("VACUUM ANALYZE {}").format(ident))
        conn.execute("CHECKPOINT")


@contextlib.contextmanager
def periodic_analyze(url: str, table: str, every: float) -> Iterator[None]:
    """--analyze-every: ANALYZE `table` every `every` seconds while the block runs, as autovacuum
    would (it is off on some servers, and its default thresholds lag behind a sudden backlog)."""
    if every <= 0:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as conn:
            while not stop.wait(every):
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))

    thread = threading.Thread(target=loop, name=f"analyze-{table}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
