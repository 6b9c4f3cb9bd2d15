"""deliveries: indexes that keep the publisher's claim fast whatever the table's statistics say

The claim asks, for each candidate delivery, whether it is the head of its (subscription,
job) line. With `ix_deliveries_state_subscription` (state, subscription_id) in place, a
planner that believed `deliveries` empty (no ANALYZE since a backlog arrived: autovacuum
looks once a minute at best) answered that with a walk over every pending row of the
subscription, per candidate: 1.7 s per claim at a 100,000-event backlog. Without it, the
only index that matches is `ix_deliveries_order`, one probe. What it served is served by two
partial indexes: dead deliveries by subscription (replay --dead, the backlog gauge) and
delivered ones by delivered_at (prune).

fillfactor 80 leaves room on each page for the claim's update to stay HOT (it changes no
indexed column), and the autovacuum thresholds make a prompt autovacuum analyze a queue
table this size often, as queue tables need.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 23:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_STORAGE = (
    "fillfactor = 80, autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02, "
    "autovacuum_vacuum_insert_scale_factor = 0.05"
)


def upgrade() -> None:
    op.drop_index("ix_deliveries_state_subscription", table_name="deliveries")
    op.create_index(
        "ix_deliveries_dead",
        "deliveries",
        ["subscription_id"],
        unique=False,
        postgresql_where=sa.text("state = 'dead'"),
    )
    op.create_index(
        "ix_deliveries_delivered_at",
        "deliveries",
        ["delivered_at"],
        unique=False,
        postgresql_where=sa.text("state = 'delivered'"),
    )
    op.execute(f"ALTER TABLE deliveries SET ({_STORAGE})")


def downgrade() -> None:
    op.execute(
        "ALTER TABLE deliveries RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor, "
        "autovacuum_vacuum_insert_scale_factor)"
    )
    op.drop_index(
        "ix_deliveries_delivered_at", table_name="deliveries", postgresql_where=sa.text("state = 'delivered'")
    )
    op.drop_index("ix_deliveries_dead", table_name="deliveries", postgresql_where=sa.text("state = 'dead'"))
    op.create_index("ix_deliveries_state_subscription", "deliveries", ["state", "subscription_id"], unique=False)
