"""subscriber health: a rate limit per subscriber, a circuit breaker and auto-disable (#12)

All of it is state on `subscriptions`, because every publisher process must see the same:
- `rate_limit` / `rate_period` (`--rate 50/s`), and `next_send_at`, the next free slot, which
  each claim advances by one interval per delivery it takes (virtual scheduling, as GCRA), so
  that any number of publishers together never exceed the rate;
- `consecutive_failures`, `failing_since` (the first failure after the last success: the
  auto-disable clock), and the breaker: `circuit_open_until` (NULL = closed), the current
  `circuit_cooloff` (doubled on each failed probe) and the delivery sent as the probe.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import INTERVAL

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = (
    ("rate_limit", sa.Integer(), None, "attempts allowed per rate_period (--rate); NULL = no limit"),
    ("rate_period", INTERVAL(), None, "1 second, 1 minute or 1 hour"),
    ("next_send_at", sa.DateTime(timezone=True), None, "rate limit: the next attempt starts no earlier"),
    (
        "consecutive_failures",
        sa.Integer(),
        sa.text("0"),
        "failed attempts since the last success (the breaker opens at RECEIVER_BREAKER_FAILURES)",
    ),
    (
        "failing_since",
        sa.DateTime(timezone=True),
        None,
        "first failure after the last success (NULL: the last attempt succeeded); auto-disable counts from it",
    ),
    (
        "circuit_open_until",
        sa.DateTime(timezone=True),
        None,
        "circuit breaker: no attempts before this (NULL = closed); then one probe decides",
    ),
    ("circuit_cooloff", INTERVAL(), None, "the breaker's current cool-off (doubled on each failed probe)"),
    ("circuit_probe", sa.BigInteger(), None, "the delivery claimed as the probe, while one is out"),
)


def upgrade() -> None:
    for name, type_, default, comment in COLUMNS:
        op.add_column(
            "subscriptions",
            sa.Column(name, type_, nullable=default is None, server_default=default, comment=comment),
        )
    op.create_check_constraint(
        op.f("ck_subscriptions_rate"),
        "subscriptions",
        "(rate_limit IS NULL) = (rate_period IS NULL) AND rate_limit > 0 "
        "AND rate_period IN ('1 second', '1 minute', '1 hour')",
    )
    op.alter_column(
        "subscriptions",
        "disabled_reason",
        comment="why it was disabled (operator, HTTP 410 Gone, or failing for RECEIVER_DISABLE_AFTER)",
        existing_type=sa.Text(),
    )


def downgrade() -> None:
    op.alter_column(
        "subscriptions",
        "disabled_reason",
        comment="why it was disabled (operator, or HTTP 410 Gone)",
        existing_type=sa.Text(),
    )
    op.drop_constraint(op.f("ck_subscriptions_rate"), "subscriptions", type_="check")
    for name, _, _, _ in reversed(COLUMNS):
        op.drop_column("subscriptions", name)
