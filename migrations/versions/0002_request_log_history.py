"""Request log keeps its history: no foreign key to accounts, the account label on each row.

Revision ID: 0002_request_log_history
Revises: 0001_initial
Create Date: 2026-12-06

A row buffered for an account that is removed before the row is written no longer violates a
foreign key (which made every later batch fail); rows of a removed account keep its id and label.
Batch mode rebuilds the table on SQLite; PostgreSQL alters it in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_request_log_history"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_request_log_account_id_accounts"


def upgrade() -> None:
    with op.batch_alter_table("request_log") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        batch.add_column(sa.Column("account_label", sa.String(200), nullable=True))


def downgrade() -> None:
    op.execute("UPDATE request_log SET account_id = NULL "
               "WHERE account_id IS NOT NULL AND account_id NOT IN (SELECT id FROM accounts)")
    with op.batch_alter_table("request_log") as batch:
        batch.drop_column("account_label")
        batch.create_foreign_key(FK, "accounts", ["account_id"], ["id"], ondelete="SET NULL")
