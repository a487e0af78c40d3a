"""Initial schema: accounts, request_log, usage_snapshots, model_registry, meta.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-25

Hand-reviewed against ``codexlb/db/models.py`` (a test upgrades an empty database and checks that
autogenerate finds no difference). Timestamps are unix float seconds; tokens are Fernet text.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 64-bit ids on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _usage_columns() -> list[sa.Column]:
    return [
        sa.Column("primary_used_percent", sa.Float(), nullable=True),
        sa.Column("primary_window_minutes", sa.Integer(), nullable=True),
        sa.Column("primary_resets_at", sa.Float(), nullable=True),
        sa.Column("secondary_used_percent", sa.Float(), nullable=True),
        sa.Column("secondary_window_minutes", sa.Integer(), nullable=True),
        sa.Column("secondary_resets_at", sa.Float(), nullable=True),
        sa.Column("credits", sa.Float(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("label", sa.String(200), server_default=sa.text("''"), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("chatgpt_account_id", sa.String(200), nullable=True),
        sa.Column("plan_type", sa.String(50), nullable=True),
        sa.Column("status", sa.String(32), server_default=sa.text("'active'"), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("access_token_enc", sa.Text(), nullable=True),
        sa.Column("refresh_token_enc", sa.Text(), nullable=True),
        sa.Column("id_token_enc", sa.Text(), nullable=True),
        sa.Column("token_issued_at", sa.Float(), nullable=True),
        sa.Column("token_refreshed_at", sa.Float(), nullable=True),
        sa.Column("cooldown_until", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        *_usage_columns(),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("chatgpt_account_id", name=op.f("uq_accounts_chatgpt_account_id")),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_meta")),
    )
    op.create_table(
        "model_registry",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("etag", sa.String(500), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_model_registry")),
    )
    op.create_table(
        "request_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=True),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(100), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("cached_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=True),
        sa.Column("ttfb_ms", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("session_key_hash", sa.String(64), nullable=True),
        sa.Column("route", sa.String(200), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="SET NULL",
                                name=op.f("fk_request_log_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_log")),
    )
    op.create_index("ix_request_log_time", "request_log", ["time"])
    op.create_index("ix_request_log_account_id_time", "request_log", ["account_id", "time"])
    op.create_table(
        "usage_snapshots",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        *_usage_columns(),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_usage_snapshots_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_snapshots")),
    )
    op.create_index("ix_usage_snapshots_account_id_time", "usage_snapshots", ["account_id", "time"])
    op.create_index("ix_usage_snapshots_time", "usage_snapshots", ["time"])


def downgrade() -> None:
    op.drop_table("usage_snapshots")
    op.drop_table("request_log")
    op.drop_table("model_registry")
    op.drop_table("meta")
    op.drop_table("accounts")
