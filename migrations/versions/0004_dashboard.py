"""Dashboard: hourly request rollups, signed-in sessions, indexes for the request-log filters.

Revision ID: 0004_dashboard
Revises: 0003_account_caps
Create Date: 2026-12-06

The request-log filters (model, status, route) each get a ``(column, time)`` index so a filtered
page is an index range read, newest first; the charts read ``request_rollup_hourly``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_dashboard"
down_revision: str | Sequence[str] | None = "0003_account_caps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FILTER_INDEXES = (("ix_request_log_model_time", "model"), ("ix_request_log_status_time", "status"),
                  ("ix_request_log_route_time", "route"))


def upgrade() -> None:
    op.create_table(
        "request_rollup_hourly",
        sa.Column("hour", BIG_ID, autoincrement=False, nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in (
            "requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")),
        sa.PrimaryKeyConstraint("hour", name=op.f("pk_request_rollup_hourly")),
    )
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(64), nullable=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_dashboard_sessions")),
    )
    op.create_index("ix_dashboard_sessions_expires_at", "dashboard_sessions", ["expires_at"])
    for name, column in FILTER_INDEXES:
        op.create_index(name, "request_log", [column, "time"])


def downgrade() -> None:
    for name, _ in FILTER_INDEXES:
        op.drop_index(name, table_name="request_log")
    op.drop_index("ix_dashboard_sessions_expires_at", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
    op.drop_table("request_rollup_hourly")
