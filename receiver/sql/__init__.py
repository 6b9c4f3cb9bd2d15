"""The current schema, in the order it is built: tables, the state machine, operational events, views.

These files are what a reader opens to learn the schema; `receiver migrate` builds the database
from the Alembic revisions in migrations/, and tests/integration/test_schema_file.py proves the two
agree. `schema()` is what that test (and anyone who wants a scratch database without Alembic) runs.
"""

from __future__ import annotations

from importlib import resources

FILES = ("tables.sql", "state_machine.sql", "operational.sql", "views.sql")


def read(name: str) -> str:
    """One of FILES, as text (from the installed package, so it works from a wheel too)."""
    return (resources.files(__name__) / name).read_text(encoding="utf-8")


def schema() -> str:
    """All of FILES in order: one script that builds the current schema in an empty database."""
    return "\n".join(read(name) for name in FILES)
