"""The schema files (receiver/sql/) are the schema the migrations build, function bodies included.

One database is migrated from empty to head (the session's template); another is built from the
schema files alone. Their catalogs are read into plain dictionaries and must be equal: tables and
their storage options, columns (position, type, nullability, default, identity), constraints,
indexes, comments, functions (the whole `pg_get_functiondef`: arguments, result, language,
volatility, body), views, triggers, sequences and types. A difference is printed object by object.

Function bodies are compared with `--` comments removed and runs of whitespace folded to one
space, so the schema files may explain a body line by line and indent it for reading; any other
change to a body is a difference.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from receiver import sql
from receiver.core import db, migrate, tables
from receiver.jobs import reconcile

Catalog = dict[str, dict[str, Any]]

# Each query yields (name, description) rows for one kind of object in schema `public`.
# alembic_version is Alembic's own bookkeeping, not part of the schema.
_CATALOG = {
    "relations": """
        SELECT c.relname, c.relkind, c.reloptions, c.relpersistence, c.relrowsecurity,
               obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
          AND c.relname <> 'alembic_version'
    """,
    "columns": """
        SELECT c.relname || '.' || a.attname,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
               format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
               a.attidentity, a.attgenerated, co.collname, col_description(c.oid, a.attnum)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
          AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> 'alembic_version'
    """,
    "constraints": """
        SELECT cl.relname || '.' || con.conname, con.contype, pg_get_constraintdef(con.oid),
               obj_description(con.oid, 'pg_constraint')
        FROM pg_constraint con
        JOIN pg_class cl ON cl.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        WHERE n.nspname = 'public' AND cl.relname <> 'alembic_version'
    """,
    "indexes": """
        SELECT i.relname, pg_get_indexdef(i.oid), i.reloptions, obj_description(i.oid, 'pg_class')
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = i.relnamespace
        WHERE n.nspname = 'public' AND t.relname <> 'alembic_version'
    """,
    "functions": """
        SELECT p.oid::regprocedure::text, p.prokind,
               CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END,
               obj_description(p.oid, 'pg_proc')
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public'
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    """,
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid, true)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')
    """,
    "triggers": """
        SELECT c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid), t.tgenabled,
               obj_description(t.oid, 'pg_trigger')
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal
    """,
    "sequences": """
        SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmax, s.seqmin,
               s.seqcache, s.seqcycle,
               (SELECT t.relname || '.' || a.attname || ' ' || d.deptype::text
                FROM pg_depend d
                JOIN pg_class t ON t.oid = d.refobjid
                JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
        FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
    """,
    "types": """
        SELECT t.typname, t.typtype, pg_catalog.format_type(t.oid, NULL),
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
               obj_description(t.oid, 'pg_type')
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'm')
    """,
    "extensions": "SELECT extname, extversion FROM pg_extension",
    "rules": """
        SELECT tablename || '.' || rulename, definition FROM pg_rules WHERE schemaname = 'public'
    """,
    "policies": """
        SELECT tablename || '.' || policyname, permissive, roles, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = 'public'
    """,
}


def _without_comments(text: str) -> str:
    """`text` with `--` comments removed (outside quoted strings) and whitespace folded."""
    out: list[str] = []
    i, quoted = 0, False
    while i < len(text):
        char = text[i]
        if char == "'":
            quoted = not quoted  # a doubled quote ('') closes and reopens: still right
        elif not quoted and text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        out.append(char)
        i += 1
    return re.sub(r"\s+", " ", "".join(out)).strip()


def catalog(database_url: str) -> Catalog:
    """What the schema of `database_url` holds, kind by kind and object by object."""
    found: Catalog = {}
    with psycopg.connect(database_url) as conn:
        for kind, query in _CATALOG.items():
            rows = conn.execute(query).fetchall()
            found[kind] = {row[0]: list(row[1:]) for row in rows}
    for name, (prokind, definition, comment) in found["functions"].items():
        body = None if definition is None else _without_comments(definition)
        found["functions"][name] = [prokind, body, comment]
    return found


def differences(migrated: Catalog, from_files: Catalog) -> Iterator[str]:
    """Every object that is not the same on both sides, as lines a person can act on."""
    for kind in _CATALOG:
        left, right = migrated[kind], from_files[kind]
        for name in sorted(left.keys() - right.keys()):
            yield f"{kind}: {name} is made by the migrations but not by receiver/sql/"
        for name in sorted(right.keys() - left.keys()):
            yield f"{kind}: {name} is in receiver/sql/ but the migrations do not make it"
        for name in sorted(left.keys() & right.keys()):
            if left[name] == right[name]:
                continue
            yield f"{kind}: {name} differs"
            for was, now in zip(left[name], right[name], strict=True):
                if was == now:
                    continue
                if isinstance(was, str) and isinstance(now, str) and len(was) + len(now) > 160:
                    yield from (
                        "    " + line
                        for line in difflib.unified_diff(
                            _lines(was), _lines(now), "migrations", "receiver/sql", lineterm="", n=1
                        )
                    )
                else:
                    yield f"    migrations:        {was!r}\n    receiver/sql: {now!r}"


def _lines(text: str) -> list[str]:
    # Folded bodies are one long line: break them at statement ends so the diff points somewhere.
    return re.sub(r"(;|\bTHEN\b|\bBEGIN\b|\bLOOP\b) ", r"\1\n", text).splitlines()


@pytest.fixture
def schema_file_database(empty_database_url: str) -> str:
    """A database built from receiver/sql/ alone, without Alembic."""
    with psycopg.connect(empty_database_url) as conn:
        conn.execute(sql.schema())
    return empty_database_url


def test_migrated_database_equals_the_schema_files(database_url: str, schema_file_database: str) -> None:
    found = list(differences(catalog(database_url), catalog(schema_file_database)))
    assert not found, "the migrations and receiver/sql/ disagree:\n" + "\n".join(found)


def test_the_comparison_sees_the_whole_schema(database_url: str) -> None:
    """Guards the comparison itself: a query that matched nothing would make every check pass."""
    migrated = catalog(database_url)
    assert {"jobs", "deliveries", "job_history", "outbox_events_seq_seq"} <= migrated["relations"].keys()
    assert migrated["relations"]["deliveries"][1] == [
        "fillfactor=80",
        "autovacuum_vacuum_scale_factor=0.05",
        "autovacuum_analyze_scale_factor=0.02",
        "autovacuum_vacuum_insert_scale_factor=0.05",
    ]
    assert len(migrated["columns"]) > 80
    assert "subscriptions.ck_subscriptions_kind" in migrated["constraints"]
    assert "deliveries.fk_deliveries_event_id_outbox_events" in migrated["constraints"]
    assert "ix_jobs_unfinished" in migrated["indexes"]
    assert {"job_history", "job_latency", "daily_usage"} == migrated["views"].keys()
    ingest = next(body for name, (_, body, _) in migrated["functions"].items() if name.startswith("receiver_ingest("))
    assert "ON CONFLICT (endpoint, idempotency_key) DO NOTHING" in ingest
    assert "outbox_events_seq_seq" in migrated["sequences"]


def test_comments_in_bodies_do_not_count_but_everything_else_does() -> None:
    assert _without_comments("SELECT 1; -- why\n  SELECT  '--kept'  -- gone") == "SELECT 1; SELECT '--kept'"
    assert _without_comments("SELECT 'it''s -- kept'") == "SELECT 'it''s -- kept'"
    assert _without_comments("SELECT 2") != _without_comments("SELECT 3")


def test_schema_files_equal_the_models(schema_file_database: str) -> None:
    engine = sa.create_engine(db.sqlalchemy_url(schema_file_database), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert list(compare_metadata(MigrationContext.configure(conn), tables.metadata)) == []
    finally:
        engine.dispose()


def test_the_reconciler_claims_through_the_unfinished_index(database_url: str) -> None:
    """The claim asks `NOT receiver_status_terminal(status)`, the index is written out: they agree
    only while the planner inlines the function into the index's predicate."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN " + reconcile.CLAIM.replace("%(stale)s", "interval '15 minutes'").replace("%(limit)s", "100")
        ).fetchall()
        conn.rollback()
    assert "ix_jobs_unfinished" in "\n".join(row[0] for row in plan)


def test_the_latest_migration_keeps_every_function_the_release_before_calls(empty_database_url: str) -> None:
    """Rolling deploys: processes of the release before keep running on the new schema until they are
    replaced, so the latest migration may add functions and replace bodies, never remove or re-type one
    (a changed contract gets a new name, receiver_ingest_v2; receiver/sql/state_machine.sql)."""
    query = """
        SELECT p.oid::regprocedure::text, pg_get_function_result(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname LIKE 'receiver%'
    """
    scripts = ScriptDirectory.from_config(migrate.alembic_config(empty_database_url))
    previous = scripts.get_revision(migrate.head_revision()).down_revision
    assert isinstance(previous, str)
    migrate.upgrade(empty_database_url, previous)  # as the release before left it, never at head
    with psycopg.connect(empty_database_url) as conn:
        before: dict[str, str] = dict(conn.execute(query).fetchall())
    migrate.upgrade(empty_database_url, "head")
    with psycopg.connect(empty_database_url) as conn:
        after: dict[str, str] = dict(conn.execute(query).fetchall())
    gone = {name: result for name, result in before.items() if after.get(name) != result}
    assert not gone, f"the latest migration removes or re-types functions the release before calls: {gone}"
