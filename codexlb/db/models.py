"""ORM models of every codexlb table. One Alembic history (``migrations/``) owns them all.

Conventions: ids of accounts are uuid4 hex strings; every timestamp is a unix float (seconds, UTC),
the same unit the in-memory :class:`codexlb.types.Account` uses; tokens are stored only as Fernet
text (``*_enc`` columns, see :mod:`codexlb.db.crypto`). Only :mod:`codexlb.db` touches these classes;
everything else gets plain dataclasses.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# A 64-bit key on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY is the rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so batch migrations can address constraints."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AccountRow(Base):
    """One pooled ChatGPT account."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(200), server_default=text("''"))
    email: Mapped[str | None] = mapped_column(String(320))
    chatgpt_account_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    plan_type: Mapped[str | None] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(32), server_default=text("'active'"))
    status_reason: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    id_token_enc: Mapped[str | None] = mapped_column(Text)
    token_issued_at: Mapped[float | None] = mapped_column(Float)
    token_refreshed_at: Mapped[float | None] = mapped_column(Float)
    cooldown_until: Mapped[float] = mapped_column(Float, server_default=text("0"))
    last_used_at: Mapped[float | None] = mapped_column(Float)
    primary_used_percent: Mapped[float | None] = mapped_column(Float)
    primary_window_minutes: Mapped[int | None] = mapped_column(Integer)
    primary_resets_at: Mapped[float | None] = mapped_column(Float)
    secondary_used_percent: Mapped[float | None] = mapped_column(Float)
    secondary_window_minutes: Mapped[int | None] = mapped_column(Integer)
    secondary_resets_at: Mapped[float | None] = mapped_column(Float)
    credits: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    max_primary_percent: Mapped[float | None] = mapped_column(Float)
    """Usage cap on the 5-hour window (percent); NULL: none."""
    max_secondary_percent: Mapped[float | None] = mapped_column(Float)
    """Usage cap on the weekly window (percent); NULL: none."""


class RequestLogRow(Base):
    """One proxied request. Grows to millions of rows; the dashboard reads by time and account.

    Rows are history: they keep the account's id and label after the account is removed.
    """

    __tablename__ = "request_log"
    __table_args__ = (
        Index("ix_request_log_time", "time"),
        Index("ix_request_log_account_id_time", "account_id", "time"),
        Index("ix_request_log_model_time", "model", "time"),
        Index("ix_request_log_status_time", "status", "time"),
        Index("ix_request_log_route_time", "route", "time"),
        Index("ix_request_log_api_key_id_time", "api_key_id", "time"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Float)
    account_id: Mapped[str | None] = mapped_column(String(32))
    """The account that answered; no foreign key, so the history outlives a removed account."""
    account_label: Mapped[str | None] = mapped_column(String(200))
    """The account's label when the request was made (kept after the account is removed)."""
    endpoint: Mapped[str] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[int | None] = mapped_column(Integer)
    """HTTP status sent to the client."""
    error_code: Mapped[str | None] = mapped_column(String(100))
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    ttfb_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    session_key_hash: Mapped[str | None] = mapped_column(String(64))
    route: Mapped[str | None] = mapped_column(String(200))
    """``strategy:reason`` of the selection that picked the account."""
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    api_key_id: Mapped[str | None] = mapped_column(String(32))
    """The client API key that made the request: an ``api_keys.id``, ``static:<hash prefix>`` or NULL."""


class UsageSnapshotRow(Base):
    """Usage of one account at one time (history for charts; pruned by retention)."""

    __tablename__ = "usage_snapshots"
    __table_args__ = (
        Index("ix_usage_snapshots_account_id_time", "account_id", "time"),
        Index("ix_usage_snapshots_time", "time"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(32), ForeignKey("accounts.id", ondelete="CASCADE"))
    time: Mapped[float] = mapped_column(Float)
    primary_used_percent: Mapped[float | None] = mapped_column(Float)
    primary_window_minutes: Mapped[int | None] = mapped_column(Integer)
    primary_resets_at: Mapped[float | None] = mapped_column(Float)
    secondary_used_percent: Mapped[float | None] = mapped_column(Float)
    secondary_window_minutes: Mapped[int | None] = mapped_column(Integer)
    secondary_resets_at: Mapped[float | None] = mapped_column(Float)
    credits: Mapped[float | None] = mapped_column(Float)


class ModelRegistryRow(Base):
    """Cached upstream model list (payload is JSON text), revalidated with its ETag."""

    __tablename__ = "model_registry"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    etag: Mapped[str | None] = mapped_column(String(500))
    payload: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[float] = mapped_column(Float)


class MetaRow(Base):
    """Small key/value facts about the database itself (e.g. the encryption check value)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RequestRollupRow(Base):
    """Request-log totals of one finished hour (the dashboard's charts read these, not the log).

    Filled on read by :mod:`codexlb.db.dashboard_queries` for hours old enough that no more rows
    can arrive; an hour with no requests has a row of zeros, so it is never aggregated twice.
    """

    __tablename__ = "request_rollup_hourly"

    hour: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    """Unix time of the hour's start divided by 3600."""
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)


class DashboardSessionRow(Base):
    """A signed-in dashboard browser: an admin, or an API-key holder (``kind = 'key'``)."""

    __tablename__ = "dashboard_sessions"
    __table_args__ = (Index("ix_dashboard_sessions_expires_at", "expires_at"),)

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the session id held in the cookie (the id itself is never stored)."""
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(String(64))
    """For ``kind = 'key'``: the API key's id."""
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class ApiKeyRow(Base):
    """One client API key: only the SHA-256 of the key is stored (see :mod:`codexlb.keys.secret`).

    ``limits``, ``models`` and ``accounts`` are JSON text (``accounts`` holds account ids).
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(32))
    """The first characters of the key, to recognise it in lists (not enough to use it)."""
    limits: Mapped[str] = mapped_column(Text, server_default=text("'[]'"))
    models: Mapped[str | None] = mapped_column(Text)
    accounts: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
    rotated_at: Mapped[float | None] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)


class ApiKeyCounterRow(Base):
    """Usage of one key in one fixed window: every replica adds its counts here every few seconds."""

    __tablename__ = "api_key_counters"
    __table_args__ = (Index("ix_api_key_counters_window_end", "window_end"),)

    key_id: Mapped[str] = mapped_column(String(32), ForeignKey("api_keys.id", ondelete="CASCADE"),
                                        primary_key=True)
    window: Mapped[str] = mapped_column(String(16), primary_key=True)
    """``5h``, ``day``, ``week`` or ``month``."""
    window_start: Mapped[float] = mapped_column(Float, primary_key=True)
    window_end: Mapped[float] = mapped_column(Float)
    requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cached_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class ConversationPinRow(Base):
    """Which account a conversation lives on, shared by replicas of one PostgreSQL database.

    A placement is claimed by inserting the row (the first replica wins); a move is a compare-and-set
    update of ``account_id``. Rows idle for a day are pruned (see :mod:`codexlb.db.pins`).
    """

    __tablename__ = "conversation_pins"
    __table_args__ = (
        Index("ix_conversation_pins_changed_at", "changed_at"),
        Index("ix_conversation_pins_used_at", "used_at"),
    )

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The conversation's ``session_key_hash`` (what the request log stores; never the key)."""
    account_id: Mapped[str] = mapped_column(String(32))
    """No foreign key: a removed account's pins are moved or pruned, never a reason to refuse a write."""
    moves: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    """How often the conversation moved (a moved conversation is not moved early again)."""
    changed_at: Mapped[float] = mapped_column(Float)
    """When it was placed or last moved (replicas read the rows changed since their last read)."""
    used_at: Mapped[float] = mapped_column(Float)
    """About when a turn last used it (written in batches, at most every few minutes per replica)."""


class AccountSpendRow(Base):
    """Quota tokens all replicas spent on an account, ever: each adds its share every second, so
    every replica learns an account's budget from the whole spend, not from its own part of it."""

    __tablename__ = "account_spend"

    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """No foreign key: the totals are a routing hint, written without a lock on the account."""
    tokens: Mapped[float] = mapped_column(Float, server_default=text("0"))
