"""Alembic, driven from code: `receiver migrate`, the readiness check, and the tests."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from receiver.core import db
from receiver.core.errors import ConfigError

log = logging.getLogger("receiver.core.migrate")

# The package carries its migrations (receiver/migrations links to the top-level migrations/ in the
# source tree, and the wheel holds a copy), so `receiver migrate` works from any install.
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    if not (MIGRATIONS / "env.py").exists():
        raise ConfigError(
            f"migrations not found at {MIGRATIONS}; the installation is incomplete, reinstall doitong-receiver"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", db.sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> str | None:
    """Bring the schema to `revision` and return the revision the database is at afterwards.

    A database already past this release's head is left as it is: during a rolling deploy the
    next release's `receiver migrate` runs first, and this release keeps working on its schema
    (README, "Upgrading"). Alembic itself would stop at a revision it cannot find."""
    config = alembic_config(database_url)
    if revision == "head":
        current = current_revision(database_url)
        if standing(current) == "ahead":
            log.warning(
                "schema at %s is newer than this release knows (%s): nothing to migrate", current, head_revision()
            )
            return current
    command.upgrade(config, revision)
    return current_revision(database_url)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


@functools.cache
def _scripts() -> ScriptDirectory:
    # Parsed once per process: /readyz asks on every probe, and the revisions cannot change under us.
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())


def head_revision() -> str:
    head = _scripts().get_current_head()
    if head is None:
        raise ConfigError(f"no migration revisions found under {MIGRATIONS}")
    return head


Standing = Literal["at_head", "ahead", "behind"]


def standing(current: str | None) -> Standing:
    """Where a database at revision `current` (None: never migrated) stands against this code.

    `ahead` is a revision this code does not carry. The history is linear, so such a revision
    can only come from a later release whose migration ran before this process was replaced:
    this code still works on that schema, because a later release keeps every function the
    release before it calls (receiver/sql/state_machine.sql). `behind` is a revision this
    code carries but not its head, or none: the functions this code calls may be missing."""
    if current == head_revision():
        return "at_head"
    if current is None or current in _known_revisions():
        return "behind"
    return "ahead"


def current_revision(database_url: str) -> str | None:
    engine = sa.create_engine(db.sqlalchemy_url(database_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return current_revision_sync(conn)
    finally:
        engine.dispose()


def current_revision_sync(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
