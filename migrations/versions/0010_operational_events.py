"""reserved for operational events (#12): events about the receiver itself, signature failure counts

PLACEHOLDER: filled in by the change that owns it; it changes nothing until then.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 12:30:00.000000
"""

from __future__ import annotations

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
