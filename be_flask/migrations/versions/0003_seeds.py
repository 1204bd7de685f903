"""Remember which one-time seeds ran, so deleted default users never come back.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    seeds = op.create_table(
        "seeds",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("seeded_at", sa.DateTime(timezone=True)),
    )
    # A database that already has users was seeded by the code before this table existed.
    if op.get_bind().execute(sa.text("SELECT 1 FROM users LIMIT 1")).first():
        op.bulk_insert(seeds, [{"name": "default_users", "seeded_at": None}])


def downgrade() -> None:
    op.drop_table("seeds")
