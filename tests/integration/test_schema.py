"""Migrations: the migrated schema equals the models; upgrade and downgrade both run.

That it equals the schema files in receiver/sql/ is test_schema_file.py's."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from receiver.core import db, migrate, tables
from tests.support import scalar


def _diff(database_url: str) -> list[object]:
    engine = sa.create_engine(db.sqlalchemy_url(database_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), tables.metadata))
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_models(database_url: str) -> None:
    assert _diff(database_url) == []


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    migrate.downgrade(database_url, "base")
    tables = scalar(
        database_url,
        "SELECT count(*) FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_name <> 'alembic_version'",
    )
    assert tables == 0
    assert scalar(database_url, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'receiver_%%'") == 0
    migrate.upgrade(database_url)
    assert _diff(database_url) == []
    assert scalar(database_url, "SELECT version_num FROM alembic_version") == migrate.head_revision()


def test_columns_are_documented(database_url: str) -> None:
    undocumented = scalar(
        database_url,
        """
        SELECT count(*) FROM information_schema.columns c
        JOIN pg_class t ON t.relname = c.table_name
        JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
        WHERE c.table_schema = 'public' AND t.relkind = 'r' AND c.table_name <> 'alembic_version'
          AND col_description(t.oid, c.ordinal_position) IS NULL
          AND c.column_name NOT IN ('id')
        """,
    )
    assert undocumented == 0
