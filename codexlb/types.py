"""Domain types shared by the core and plugins: accounts, their usage windows, and the app as hooks see it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from codexlb.db.migrate import MigrationReport
    from codexlb.db.store import AccountStore
    from codexlb.jobs import ModelRegistry, Scheduler
    from codexlb.pool import AccountPool
    from codexlb.settings import Settings
    from codexlb.tasks import TaskSet
    from codexlb.tokens import TokenManager


class AccountStatus(StrEnum):
    """Lifecycle of a pooled account. Only ``active`` accounts are routed to."""

    ACTIVE = "active"
    PAUSED = "paused"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    REAUTH_REQUIRED = "reauth_required"
    DEACTIVATED = "deactivated"


@dataclass(slots=True)
class UsageWindow:
    """One rate-limit window as the upstream reports it."""

    used_percent: float = 0.0
    """0..100, share of the window's quota already spent."""
    window_minutes: int | None = None
    """Length of the window (300 for the 5-hour window, 10080 for the weekly one)."""
    resets_at: float | None = None
    """Unix time when the window resets."""

    @property
    def remaining_percent(self) -> float:
        return max(0.0, 100.0 - self.used_percent)

    def seconds_to_reset(self, now: float | None = None) -> float | None:
        if self.resets_at is None:
            return None
        return max(0.0, self.resets_at - (now if now is not None else time.time()))


@dataclass(slots=True, eq=False)
class Account:
    """In-memory state of one pooled account (no secrets: tokens live in the account store).

    Plugins read it; the core and the usage tracker update it in place, so a selection always
    sees the newest rate-limit headers without a database round-trip.
    """

    id: str
    """Stable internal id (primary key)."""
    label: str = ""
    email: str | None = None
    chatgpt_account_id: str | None = None
    plan_type: str | None = None
    status: AccountStatus = AccountStatus.ACTIVE
    status_reason: str | None = None
    priority: int = 0
    cooldown_until: float = 0.0
    """Unix time before which the account is not routed to (short cooldowns and usage limits)."""
    last_used_at: float | None = None
    primary: UsageWindow = field(default_factory=UsageWindow)
    """The short (5-hour) window."""
    secondary: UsageWindow = field(default_factory=UsageWindow)
    """The weekly window."""
    credits: float | None = None
    max_primary_percent: float | None = None
    """Cap on the short window's used percent: at it the account takes no traffic (``None``: no cap)."""
    max_secondary_percent: float | None = None
    """Cap on the weekly window's used percent."""
    seen_limits: dict[str, tuple[Any, ...]] = field(default_factory=dict, repr=False)
    """What each rate-limit source last applied (:mod:`codexlb.ratelimits` skips repeats)."""

    def capped(self, now: float | None = None) -> UsageWindow | None:
        """The window that has reached its cap (and has not reset since), or ``None``."""
        now = time.time() if now is None else now
        for cap, window in ((self.max_primary_percent, self.primary), (self.max_secondary_percent, self.secondary)):
            if cap is not None and window.used_percent >= cap and (window.resets_at is None or window.resets_at > now):
                return window
        return None

    def spent(self, now: float | None = None) -> UsageWindow | None:
        """A window the upstream reported fully used that has not reset yet (binding: latest reset)."""
        now = time.time() if now is None else now
        spent = [w for w in (self.primary, self.secondary)
                 if w.used_percent >= 100.0 and w.resets_at is not None and w.resets_at > now]
        return max(spent, key=lambda w: w.resets_at or 0.0) if spent else None

    def usable(self, now: float | None = None) -> bool:
        """Active and not cooling down."""
        now = time.time() if now is None else now
        if self.status is not AccountStatus.ACTIVE:
            return False
        return self.cooldown_until <= now

    @property
    def weekly_remaining_pct(self) -> float:
        return self.secondary.remaining_percent

    @property
    def short_remaining_pct(self) -> float:
        return self.primary.remaining_percent

    def __repr__(self) -> str:
        return f"Account(id={self.id!r}, label={self.label!r}, status={self.status.value})"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens of one response, from ``response.completed``."""

    input: int = 0
    cached: int = 0
    output: int = 0
    reasoning: int = 0


class AppView(Protocol):
    """What hooks, plugins and the core's services see of the running app (``app`` in every hook).

    :class:`codexlb.app.CodexLB` is the one implementation; a test may pass any object with these.
    """

    @property
    def settings(self) -> Settings:
        """The validated core settings."""

    @property
    def pool(self) -> AccountPool:
        """The in-memory accounts (routing state; written back in the background)."""

    @property
    def tokens(self) -> TokenManager:
        """Access tokens for upstream calls, refreshed before use."""

    @property
    def tasks(self) -> TaskSet:
        """Where background tasks are spawned (kept referenced, cancelled at shutdown)."""

    @property
    def store(self) -> AccountStore | None:
        """Stored accounts; ``None`` until the database is open and migrated."""

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession] | None:
        """Database sessions; ``None`` before start-up."""

    @property
    def migration_report(self) -> MigrationReport | None:
        """What start-up found and did to the schema (``error`` set when it is not usable)."""

    @property
    def models(self) -> ModelRegistry:
        """The cached model list."""

    @property
    def jobs(self) -> Scheduler:
        """The background jobs (usage, tokens, models) and their statuses."""
