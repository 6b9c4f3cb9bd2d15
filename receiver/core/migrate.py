"""Alembic, driven from code: `receiver migrate`, the readiness check, and the tests."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from receiver.core import db
from receiver.core.errors import ConfigError

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


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise ConfigError(f"no migration revisions found under {MIGRATIONS}")
    return head


def current_revision_sync(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
