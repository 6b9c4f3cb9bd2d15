"""reserved for subscriber health (#12): rate limits, circuit breaker, auto-disable

PLACEHOLDER: filled in by the change that owns it; it changes nothing until then.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 12:30:00.000000
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
