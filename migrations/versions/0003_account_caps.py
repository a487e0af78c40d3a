"""Per-account usage caps: ``max_primary_percent`` and ``max_secondary_percent`` (NULL: no cap).

Revision ID: 0003_account_caps
Revises: 0002_request_log_history
Create Date: 2025-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_account_caps"
down_revision: str | Sequence[str] | None = "0002_request_log_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


CAPS = ("max_primary_percent", "max_secondary_percent")


def upgrade() -> None:
    # a database remapped from a legacy revision may have the columns already
    existing: set[str] = set()
    if not op.get_context().as_sql:  # offline (--sql) mode cannot look
        existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("accounts")}
    missing = [name for name in CAPS if name not in existing]
    if missing:
        with op.batch_alter_table("accounts") as batch:
            for name in missing:
                batch.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("max_secondary_percent")
        batch.drop_column("max_primary_percent")
