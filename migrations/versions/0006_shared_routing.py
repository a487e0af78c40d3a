"""Routing state shared by replicas: conversation_pins and account_spend.

Revision ID: 0006_shared_routing
Revises: 0005_api_keys
Create Date: 2026-12-08

Hand-reviewed against ``codexlb/db/models.py`` (the autogenerate parity test covers it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_shared_routing"
down_revision: str | Sequence[str] | None = "0005_api_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_pins",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("moves", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("changed_at", sa.Float(), nullable=False),
        sa.Column("used_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_conversation_pins")),
    )
    op.create_index("ix_conversation_pins_changed_at", "conversation_pins", ["changed_at"])
    op.create_index("ix_conversation_pins_used_at", "conversation_pins", ["used_at"])
    op.create_table(
        "account_spend",
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("tokens", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_spend")),
    )


def downgrade() -> None:
    op.drop_table("account_spend")
    op.drop_index("ix_conversation_pins_used_at", table_name="conversation_pins")
    op.drop_index("ix_conversation_pins_changed_at", table_name="conversation_pins")
    op.drop_table("conversation_pins")
