"""console indexes: every console page and search fast on a million jobs (#11)

Measured with bench/console.py on 1,000,000 jobs, ~3,000,000 job events and ~3,000,000
deliveries (README, "Console performance"). Each index answers a question that otherwise walks
a whole table:

- jobs by status, or by service, newest first: a status or service that matches few jobs (or
  none) walked all of ix_jobs_first_seen_at_id (a whole-table scan for `queued`);
- jobs by tag: `tags @> '{"team": "studio"}'`, a GIN index (jsonb_path_ops: containment only);
- dead deliveries newest first, of every subscriber or of one: a delivery dies two days after
  it was created, so the walk back from the newest delivery passed every delivery of those two
  days before the first dead one (1.4 s); the subscriber is the index's second column, checked
  in the index without reading the rows it skips;
- a subscriber's last failed attempt (the console's figures): only failed attempts;
- the last webhook an endpoint accepted: an endpoint that had none walked every inbound row.

None of them is on a column the publisher's claim updates, so claims stay HOT updates; none is
on pending deliveries, whose indexes the claim's plan depends on (see tables.sql).

On a live database the indexes are built CONCURRENTLY (outside a transaction), so webhooks and
deliveries keep flowing while they build: on a million jobs this takes about a minute. A build
that fails (or is interrupted) leaves an invalid index behind; running `receiver migrate` again
drops it and builds it again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 12:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# (name, table, definition after ON <table>)
INDEXES = (
    ("ix_jobs_status_first_seen_at_id", "jobs", "(status, first_seen_at, id)"),
    ("ix_jobs_service_first_seen_at_id", "jobs", "(service, first_seen_at, id)"),
    ("ix_jobs_tags", "jobs", "USING gin (tags jsonb_path_ops)"),
    ("ix_deliveries_dead_id", "deliveries", "(id, subscription_id) WHERE state = 'dead'"),
    ("ix_delivery_attempts_failed", "delivery_attempts", "(subscription_id, at) WHERE outcome <> 'delivered'"),
    ("ix_inbound_webhooks_endpoint_received_at", "inbound_webhooks", "(endpoint, received_at)"),
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, definition in INDEXES:
            _drop_if_invalid(name)
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} {definition}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _, _ in reversed(INDEXES):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def _drop_if_invalid(name: str) -> None:
    """What a failed CREATE INDEX CONCURRENTLY leaves: an index that is never used and never
    finished, which IF NOT EXISTS would keep."""
    invalid = op.get_bind().exec_driver_sql(
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %(name)s AND NOT i.indisvalid",
        {"name": name},
    )
    if invalid.first() is not None:
        op.execute(f"DROP INDEX CONCURRENTLY {name}")
