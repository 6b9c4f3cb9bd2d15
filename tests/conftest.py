"""Shared fixtures: a PostgreSQL server for the session (DATABASE_URL's, or an
embedded one), a migrated template database, and a fresh copy per test."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from receiver.core import embedded_postgres, migrate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs a command in process (`main([...])` calls logs.setup) leaves the root
    logger writing to that test's captured stderr, which pytest closes afterwards: a server
    that outlives the test (the browser tests' module-wide receiver) would then fail to log."""
    root = logging.getLogger()

    def pytests(handler: logging.Handler) -> bool:  # its capture handlers, which it adds and removes itself
        return type(handler).__module__.startswith("_pytest")

    saved = [handler for handler in root.handlers if not pytests(handler)], root.level
    yield
    root.handlers[:] = saved[0] + [handler for handler in root.handlers if pytests(handler)]
    root.setLevel(saved[1])


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL to a database on a server where tests may create and drop databases."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured.replace("postgres://", "postgresql://", 1)
        return
    home = Path(tempfile.mkdtemp(prefix="receiver-tests-pg-"))
    server, _ = embedded_postgres.start(home, "postgres", cleanup="delete")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    """`url` pointed at database `name` (host:port and ?host=/socket URLs alike)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    user = quote(str(info.get("user") or "postgres"))
    password = info.get("password")
    auth = user + (":" + quote(str(password)) if password else "")
    host = str(info.get("host") or "127.0.0.1")
    port = info.get("port")
    if host.startswith("/"):
        return f"postgresql://{auth}@/{name}?host={host}" + (f"&port={port}" if port else "")
    return f"postgresql://{auth}@{host}{':' + str(port) if port else ''}/{name}"


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        conn.execute(statement)
    return _with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    name = f"receiver_tmpl_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_admin_url, name)
    migrate.upgrade(url)
    try:
        yield name
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def database_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    """A freshly migrated database of its own for one test."""
    name = f"receiver_test_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name, template=template_database)
    try:
        yield url
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A database with no schema at all."""
    name = f"receiver_empty_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name)
    try:
        yield url
    finally:
        drop_database(pg_admin_url, name)
