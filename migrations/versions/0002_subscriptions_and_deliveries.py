"""subscriptions and deliveries: the outbox fans out to one delivery row per event and subscriber

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 20:36:38.327931
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column(
            "id",
            sa.Text(),
            nullable=False,
            comment="sub_… for HTTP subscribers; nats / amqp for the configured brokers",
        ),
        sa.Column("kind", sa.Text(), nullable=False, comment="http, nats or amqp"),
        sa.Column("url", sa.Text(), nullable=False, comment="HTTP target, or the broker URL without its password"),
        sa.Column(
            "secret_sealed",
            sa.LargeBinary(),
            nullable=True,
            comment="whsec_ signing secret, AES-256-GCM under RECEIVER_MASTER_KEY",
        ),
        sa.Column(
            "previous_secret_sealed",
            sa.LargeBinary(),
            nullable=True,
            comment="the secret before the last rotate-secret; requests carry both signatures until it expires",
        ),
        sa.Column(
            "previous_secret_expires_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when requests stop carrying the previous secret's signature",
        ),
        sa.Column(
            "signing_key_sealed",
            sa.LargeBinary(),
            nullable=True,
            comment="Ed25519 private key for v1a signatures, sealed",
        ),
        sa.Column(
            "public_key", sa.Text(), nullable=True, comment="Ed25519 public key (whpk_…) consumers verify v1a with"
        ),
        sa.Column(
            "event_types", postgresql.ARRAY(sa.Text()), nullable=True, comment="event types delivered; NULL = all"
        ),
        sa.Column("services", postgresql.ARRAY(sa.Text()), nullable=True, comment="job services delivered; NULL = all"),
        sa.Column(
            "state",
            sa.Text(),
            server_default=sa.text("'enabled'"),
            nullable=False,
            comment="enabled or disabled (disabled: deliveries wait until enable)",
        ),
        sa.Column(
            "disabled_reason", sa.Text(), nullable=True, comment="why it was disabled (operator, or HTTP 410 Gone)"
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="events created from this moment on are delivered",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="last change",
        ),
        sa.CheckConstraint("kind IN ('http', 'nats', 'amqp')", name=op.f("ck_subscriptions_kind")),
        sa.CheckConstraint("state IN ('enabled', 'disabled')", name=op.f("ck_subscriptions_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        comment="Where outbox events go: HTTP subscribers and the configured brokers.",
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False, comment="the outbox event being delivered"),
        sa.Column("subscription_id", sa.Text(), nullable=False, comment="who it is delivered to"),
        sa.Column(
            "job_id",
            sa.Text(),
            nullable=False,
            comment="the event's job (deliveries per subscriber and job go in order)",
        ),
        sa.Column("event_seq", sa.BigInteger(), nullable=False, comment="outbox_events.seq, the order within a job"),
        sa.Column(
            "state",
            sa.Text(),
            server_default=sa.text("'pending'"),
            nullable=False,
            comment="pending, delivered or dead",
        ),
        sa.Column(
            "attempts", sa.Integer(), server_default=sa.text("0"), nullable=False, comment="attempts started so far"
        ),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="not before this time",
        ),
        sa.Column("claimed_by", sa.Text(), nullable=True, comment="publisher holding the claim"),
        sa.Column(
            "claimed_until",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="the claim's lease; after it another publisher may take over",
        ),
        sa.Column(
            "last_attempt_at", sa.DateTime(timezone=True), nullable=True, comment="when the last attempt started"
        ),
        sa.Column("last_status", sa.Integer(), nullable=True, comment="HTTP status of the last attempt"),
        sa.Column("last_error", sa.Text(), nullable=True, comment="why the last attempt failed"),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when the event was fanned out to this subscriber",
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True, comment="when it was delivered"),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'dead')", name=op.f("ck_deliveries_state")),
        sa.ForeignKeyConstraint(
            ["event_id"], ["outbox_events.id"], name=op.f("fk_deliveries_event_id_outbox_events"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_deliveries_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("event_id", "subscription_id", name=op.f("uq_deliveries_event_id_subscription_id")),
        comment="One row per event and subscriber: attempts, schedule and outcome.",
    )
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["subscription_id", "next_attempt_at", "event_seq"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_deliveries_order",
        "deliveries",
        ["subscription_id", "job_id", "event_seq"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index("ix_deliveries_state_subscription", "deliveries", ["state", "subscription_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_deliveries_state_subscription", table_name="deliveries")
    op.drop_index("ix_deliveries_order", table_name="deliveries", postgresql_where=sa.text("state = 'pending'"))
    op.drop_index("ix_deliveries_due", table_name="deliveries", postgresql_where=sa.text("state = 'pending'"))
    op.drop_table("deliveries")
    op.drop_table("subscriptions")
