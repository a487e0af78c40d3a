"""Client API keys: api_keys, api_key_counters, and request_log.api_key_id.

Revision ID: 0005_api_keys
Revises: 0004_dashboard
Create Date: 2026-12-07

Hand-reviewed against ``codexlb/db/models.py`` (the autogenerate parity test covers it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_api_keys"
down_revision: str | Sequence[str] | None = "0004_dashboard"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _counter(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("key_prefix", sa.String(32), nullable=False),
        sa.Column("limits", sa.Text(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("models", sa.Text(), nullable=True),
        sa.Column("accounts", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("rotated_at", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "api_key_counters",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("window", sa.String(16), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("window_end", sa.Float(), nullable=False),
        _counter("requests"), _counter("input_tokens"), _counter("cached_tokens"), _counter("output_tokens"),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE",
                                name=op.f("fk_api_key_counters_key_id_api_keys")),
        sa.PrimaryKeyConstraint("key_id", "window", "window_start", name=op.f("pk_api_key_counters")),
    )
    op.create_index("ix_api_key_counters_window_end", "api_key_counters", ["window_end"])
    with op.batch_alter_table("request_log") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(32), nullable=True))
    op.create_index("ix_request_log_api_key_id_time", "request_log", ["api_key_id", "time"])


def downgrade() -> None:
    op.drop_index("ix_request_log_api_key_id_time", table_name="request_log")
    with op.batch_alter_table("request_log") as batch:
        batch.drop_column("api_key_id")
    op.drop_table("api_key_counters")
    op.drop_table("api_keys")
