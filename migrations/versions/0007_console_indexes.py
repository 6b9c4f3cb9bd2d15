"""reserved for the console's indexes and summary tables on large volumes (#11)

PLACEHOLDER: filled in by the change that owns it; it changes nothing until then.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 12:30:00.000000
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
