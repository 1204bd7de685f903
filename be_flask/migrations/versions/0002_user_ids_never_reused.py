"""User ids are never given out again: AUTOINCREMENT on SQLite.

Tokens name their user by id. SQLite's plain INTEGER PRIMARY KEY reuses the highest id after
a delete, so a deleted user's tokens would pass for the next user created. PostgreSQL's
sequences never go back, so only SQLite's table is rebuilt (rows and ids kept).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "users", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "users", recreate="always", table_kwargs={"sqlite_autoincrement": False}
    ):
        pass
