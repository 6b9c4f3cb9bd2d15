"""bench/console.py's database: a filled template kept between runs, and the copy each run measures.

The fill (bench/_console_fill.py) takes minutes, so its result is kept as a database of its own,
`bench_console_template`, and each run measures a copy (`CREATE DATABASE … TEMPLATE`, a file
copy). The template's comment records what it was made from: the fill's VERSION, the job count,
the span, a digest of every migration file, and the moment it ends. When any of these differs
from the run's, or with --refill, the template is made again. A copy of an older template is
topped up with the jobs of the time since it was made (at most a day's worth), so the last hour
and day the overview shows are never empty.

Indexes and constraints are dropped before the main fill and rebuilt after it from their own
definitions (pg_get_indexdef, pg_get_constraintdef), which is several times faster than keeping
them up to date row by row and leaves the schema exactly as `receiver migrate` made it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import _console_fill
import _databases
import _processes
import _run
import psycopg
from psycopg import sql

from receiver.core import config, crypto, migrate

TEMPLATE = "bench_console_template"
# The template is filled at this revision, the one whose tables the fill writes; each copy is
# then migrated to head, so a later migration is measured on real volumes and changing one does
# not mean filling again.
FILL_REVISION = "0006"
_BUILDING = "bench_console_template_building"
# A fixed key, so that the secrets sealed into the template open in every later run.
MASTER_KEY = "YmVuY2gtY29uc29sZS1tYXN0ZXIta2V5LTMyLWJ5dGU"
FILLED_TABLES = ("jobs", "inbound_webhooks", "job_events", "outbox_events", "deliveries", "delivery_attempts")


@dataclass
class Made:
    """What the template's comment records."""

    key: str
    jobs: int
    days: float
    start: str
    end: str
    outage_start: str
    outage_end: str
    next_job: int
    fill_seconds: float

    def block(self, first: int, count: int, start: datetime, end: datetime) -> _console_fill.Block:
        return _console_fill.Block(
            first, count, start, end, datetime.fromisoformat(self.outage_start), datetime.fromisoformat(self.outage_end)
        )


def key(jobs: int, days: float) -> str:
    """What a template must have been made from to be reused."""
    digest = hashlib.sha256()
    for path in sorted(migrate.MIGRATIONS.joinpath("versions").glob("*.py")):
        if path.name[:4] <= FILL_REVISION:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"v{_console_fill.VERSION}-{jobs}-{days:g}-{digest.hexdigest()[:16]}"


def receiver_env(url: str, **extra: str) -> dict[str, str]:
    return _processes.child_env(DATABASE_URL=url, RECEIVER_MASTER_KEY=MASTER_KEY, RECEIVER_LOG_LEVEL="warning", **extra)


def made(admin_url: str) -> Made | None:
    """The template's record, or None when there is no template (or not one of ours)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (TEMPLATE,)
        ).fetchone()
    if row is None or not row[0]:
        return None
    try:
        return Made(**json.loads(row[0]))
    except (TypeError, ValueError):
        return None


def make_template(admin_url: str, jobs: int, days: float) -> Made:
    """Fill a fresh database and keep it as the template (replacing an older one)."""
    started = time.perf_counter()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(_BUILDING)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_BUILDING)))
    url = _databases.with_database(admin_url, _BUILDING)
    try:
        end = datetime.now(UTC).replace(microsecond=0)
        start = end - timedelta(days=days)
        outage_start, outage_end = end - timedelta(days=12), end - timedelta(days=10.5)
        _run.log(f"template: migrating {_BUILDING} to {FILL_REVISION}, endpoints and subscribers")
        subscriber_ids = prepare(url, start)
        block = _console_fill.Block(0, jobs, start, end, outage_start, outage_end)
        with psycopg.connect(url, autocommit=True) as conn:
            timings: dict[str, float] = {}
            with _without_indexes(conn, timings):
                timings.update(_console_fill.fill(conn, block, subscriber_ids))
            _run.log("template: VACUUM (FREEZE, ANALYZE)")
            vacuum_started = time.perf_counter()
            conn.execute("VACUUM (FREEZE, ANALYZE)")
            conn.execute("CHECKPOINT")
            timings["vacuum"] = time.perf_counter() - vacuum_started
        _run.log("template: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
        record = Made(
            key(jobs, days),
            jobs,
            days,
            start.isoformat(),
            end.isoformat(),
            outage_start.isoformat(),
            outage_end.isoformat(),
            jobs,
            time.perf_counter() - started,
        )
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(_BUILDING), sql.Identifier(TEMPLATE))
            )
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(TEMPLATE), sql.Literal(json.dumps(asdict(record)))
                )
            )
        return record
    except BaseException:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(_BUILDING)))
        raise


def prepare(url: str, start: datetime) -> list[str]:
    """Migrate to FILL_REVISION and add the endpoints and subscribers (secrets sealed under
    MASTER_KEY, as `receiver endpoints add` and `receiver subscribers add` seal them), dated back
    to `start`; returns the subscribers' ids in _console_fill.SUBSCRIBERS' order."""
    migrate.upgrade(url, FILL_REVISION)
    key = config.decode_master_key(MASTER_KEY)
    ids = []
    with psycopg.connect(url, autocommit=True) as conn:
        for name in _console_fill.ENDPOINTS[1:]:
            secret = "whsec_partner_" + hashlib.sha256(name.encode()).hexdigest()[:24]
            conn.execute(
                "INSERT INTO endpoints (name, created_at, updated_at) VALUES (%s, %s, %s)", (name, start, start)
            )
            conn.execute(
                "INSERT INTO endpoint_secrets (endpoint, secret_sealed, created_at) VALUES (%s, %s, %s)",
                (name, crypto.seal(key, secret, context=name), start),
            )
        for name, target, types, services in _console_fill.SUBSCRIBERS:
            sub_id = "sub_" + hashlib.sha256(name.encode()).hexdigest()[:16]
            secret = "whsec_" + base64.b64encode(hashlib.sha256(sub_id.encode()).digest()[:24]).decode()
            conn.execute(
                "INSERT INTO subscriptions (id, kind, url, secret_sealed, event_types, services, created_at, "
                "updated_at) VALUES (%s, 'http', %s, %s, %s, %s, %s - interval '1 day', %s)",
                (sub_id, target, crypto.seal(key, secret, context=sub_id), types, services, start, start),
            )
            ids.append(sub_id)
    return ids


def subscriber_ids(conn: psycopg.Connection[Any]) -> list[str]:
    by_url = {url: sub_id for sub_id, url in conn.execute("SELECT id, url FROM subscriptions")}
    return [by_url[target] for _, target, _, _ in _console_fill.SUBSCRIBERS]


@contextmanager
def _without_indexes(conn: psycopg.Connection[Any], timings: dict[str, float]) -> Iterator[None]:
    """Drop the filled tables' indexes and constraints (and foreign keys that point at them), and
    put each back from its own definition afterwards."""
    constraints = conn.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype
        FROM pg_constraint c
        WHERE c.contype IN ('p', 'u', 'f')
          AND (c.conrelid = ANY (%(tables)s::regclass[]) OR c.confrelid = ANY (%(tables)s::regclass[]))
        """,
        {"tables": list(FILLED_TABLES)},
    ).fetchall()
    indexes = conn.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        WHERE i.indrelid = ANY (%(tables)s::regclass[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u'))
        """,
        {"tables": list(FILLED_TABLES)},
    ).fetchall()
    for table, name, _, _ in sorted(constraints, key=lambda c: c[3] != "f"):  # foreign keys first
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name)))
    for name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    yield
    _run.log(f"fill: rebuilding {len(indexes)} indexes and {len(constraints)} constraints")
    started = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '1GB'")
    for table, name, definition, _ in sorted(constraints, key=lambda c: c[3] == "f"):  # foreign keys last
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)
            )
        )
    for _, definition in indexes:
        conn.execute(definition.encode())
    timings["indexes"] = time.perf_counter() - started


@contextmanager
def copied(admin_url: str, name: str, *, keep: bool = False) -> Iterator[str]:
    """A fresh copy of the template under `name`, dropped on the way out unless `keep`."""
    ident = sql.Identifier(name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        # FILE_COPY: the default (WAL_LOG) writes the whole template through the WAL, and the
        # checkpoints that follow would still be writing it out while pages are timed.
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY = FILE_COPY").format(ident, sql.Identifier(TEMPLATE))
        )
    try:
        yield _databases.with_database(admin_url, name)
    finally:
        if not keep:
            try:
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            except psycopg.Error as exc:
                print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)


def top_up(url: str, record: Made, now: datetime) -> int:
    """Jobs for the time between the template's end and `now` (at most the last day), at the
    template's rate; returns how many."""
    start = max(datetime.fromisoformat(record.end), now - timedelta(days=1))
    count = int(record.jobs * (now - start).total_seconds() / (record.days * 86_400))
    if count < 1:
        return 0
    with psycopg.connect(url, autocommit=True) as conn:
        _console_fill.fill(conn, record.block(record.next_job, count, start, now), subscriber_ids(conn))
        conn.execute("VACUUM ANALYZE")
    return count


def migrate_copy(url: str) -> str:
    """`receiver migrate` on the copy: from FILL_REVISION to head."""
    return _processes.run_cli([sys.executable, "-m", "receiver", "migrate"], receiver_env(url), "receiver migrate")


def sizes(url: str) -> list[tuple[str, int, int]]:
    """(table, rows, bytes with indexes and TOAST) of the filled tables."""
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        for table in FILLED_TABLES:
            row = conn.execute(
                sql.SQL("SELECT count(*), pg_total_relation_size({}) FROM {}").format(
                    sql.Literal(table), sql.Identifier(table)
                )
            ).fetchone()
            assert row is not None
            out.append((table, int(row[0]), int(row[1])))
    return out
