"""Usage refresh: poll ``GET {UPSTREAM_BASE_URL}/wham/usage`` per account (protocol.md §3).

Each account has its own due time, one ``USAGE_REFRESH_INTERVAL_SECONDS`` after its last fetch;
accounts first seen together are spread evenly over one interval, so the upstream sees a steady
trickle instead of a burst. A rate-limited account is also re-checked when its cooldown ends, so it
comes back as soon as its window resets. Answers update the account in the pool at once (windows,
credits, plan, status and cooldown) and append a usage snapshot; snapshots older than
``USAGE_HISTORY_RETENTION_DAYS`` (and request-log rows older than ``REQUEST_LOG_RETENTION_DAYS``)
are pruned about once an hour.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

from codexlb.errors import UpstreamError
from codexlb.jobs.base import Job, JobError
from codexlb.jobs.fetch import Answer, FetchError, account_headers, get_with_retries
from codexlb.pool import LIMITED, STATUS
from codexlb.types import Account, AccountStatus, UsageWindow

log = logging.getLogger("codexlb.jobs")
POLLED = (AccountStatus.ACTIVE, *LIMITED)
"""Statuses whose usage is polled (paused, deactivated and re-login accounts are left alone)."""
DEACTIVATING_CODES = frozenset({"account_deactivated", "deactivated_workspace", "account_suspended"})
WEEKLY_MINUTES = 24 * 60
"""A window at least this long counts as the weekly quota (``quota_exceeded``), else ``rate_limited``."""
PRUNE_EVERY_SECONDS = 3600.0


class AccountGone(Exception):
    """The upstream says the account is deactivated (402/404 or a deactivation code)."""


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None and value != "" and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def parse_window(data: Any, now: float) -> UsageWindow | None:
    """A usage window from ``primary_window``/``secondary_window``; minutes rounded up (as Codex does)."""
    if not isinstance(data, Mapping):
        return None
    used = _number(data.get("used_percent"))
    seconds = _number(data.get("limit_window_seconds"))
    reset_at = _number(data.get("reset_at"))
    if reset_at is None and (after := _number(data.get("reset_after_seconds"))) is not None:
        reset_at = now + after
    minutes = math.ceil(seconds / 60) if seconds is not None else None
    return UsageWindow(used or 0.0, minutes, reset_at)


def parse_credits(data: Any) -> float | None:
    if not isinstance(data, Mapping):
        return None
    return _number(data.get("balance"))


def apply_usage(account: Account, data: Mapping[str, Any], now: float) -> tuple[AccountStatus, float, str] | None:
    """Copy windows, credits and plan from a usage answer onto ``account``.

    :returns: ``(status, until, reason)`` when a quota is exhausted, else ``None``.
    """
    limits: Mapping[str, Any] = data.get("rate_limit") or {} if isinstance(data.get("rate_limit"), Mapping) else {}
    primary = parse_window(limits.get("primary_window"), now)
    secondary = parse_window(limits.get("secondary_window"), now)
    account.primary = primary or UsageWindow()
    account.secondary = secondary or UsageWindow()
    if (balance := parse_credits(data.get("credits"))) is not None:
        account.credits = balance
    if isinstance(data.get("plan_type"), str) and data["plan_type"]:
        account.plan_type = data["plan_type"]
    named = [(n, w) for n, w in (("primary", primary), ("secondary", secondary)) if w is not None]
    exhausted = [(n, w) for n, w in named if w.used_percent >= 100]
    reached = bool(limits.get("limit_reached")) or limits.get("allowed") is False
    if not exhausted and not reached:
        return None
    if not exhausted:  # the upstream says "reached" without a full window: the fullest one binds
        exhausted = sorted(named, key=lambda item: item[1].used_percent)[-1:]
    if not exhausted:
        return AccountStatus.RATE_LIMITED, now, "usage: limit reached"
    which, window = max(exhausted, key=lambda item: item[1].resets_at or 0.0)
    weekly = (window.window_minutes or 0) >= WEEKLY_MINUTES or (window.window_minutes is None
                                                                and which == "secondary")
    status = AccountStatus.QUOTA_EXCEEDED if weekly else AccountStatus.RATE_LIMITED
    until = window.resets_at if window.resets_at is not None else now
    return status, until, f"usage: {which} window at {window.used_percent:g}%"


class UsageRefreshJob(Job):
    """Keeps every polled account's usage windows and limit status current."""

    name = "usage"
    description = "poll /wham/usage per account; update windows, status and history"
    concurrency = 4
    """Most fetches in flight at once (only when several accounts are due together)."""
    backoff = 0.5
    """First back-off between retries, doubled each time up to 2 s (tests set 0)."""
    resumes_schedule = False  # a new leader spreads the accounts over one interval again

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._due: dict[str, float] = {}
        self._recheck: dict[str, float] = {}
        self._pruned_at: float | None = None
        self._not_before: dict[str, float] = {}
        self.client: Any = None
        """The scheduler's ``httpx.AsyncClient``."""

    @property
    def enabled(self) -> bool:
        return self.lb.settings.usage_refresh_enabled

    @property
    def interval(self) -> float:
        return float(self.lb.settings.usage_refresh_interval_seconds)

    # -- scheduling ---------------------------------------------------------------------------
    def adopt(self, previous: Any) -> None:
        """On becoming leader: spread every account over one interval from now (no catch-up burst)."""
        super().adopt(previous)
        self._due.clear()

    async def resume(self) -> None:
        """After :meth:`adopt`: an account fetched within the last two intervals keeps its cadence.

        It is next due one interval after its last stored snapshot (now, when that has passed), so
        a new leader neither fetches it twice within an interval nor lets it wait longer than the
        takeover took; accounts not fetched lately are spread over one interval as on a first start.
        """
        if self.lb.sessionmaker is None:
            return
        from sqlalchemy import func, select

        from codexlb.db.models import UsageSnapshotRow

        since = self.clock() - 2 * self.interval
        query = (select(UsageSnapshotRow.account_id, func.max(UsageSnapshotRow.time))
                 .where(UsageSnapshotRow.time > since).group_by(UsageSnapshotRow.account_id))
        try:
            async with self.lb.sessionmaker() as session:
                rows = (await session.execute(query)).all()
        except Exception as exc:
            log.warning("job usage: could not read the last usage snapshots (%s)", type(exc).__name__)
            return
        self._not_before = {str(account_id): at + self.interval for account_id, at in rows}

    def polled(self) -> list[Account]:
        return [a for a in self.lb.pool.all() if a.status in POLLED and a.id in self.lb.pool.credentials]

    def _plan(self, now: float) -> dict[str, float]:
        """Due time per polled account: new ones spread over one interval, limited ones re-checked."""
        accounts = self.polled()
        ids = {a.id for a in accounts}
        for gone in set(self._due) - ids:
            self._due.pop(gone, None)
            self._recheck.pop(gone, None)
        new = [a for a in accounts if a.id not in self._due]
        for account in new:
            if account.id in self._not_before:  # fetched lately by the previous leader: same cadence
                self._due[account.id] = self._not_before.pop(account.id)
        spread = [a for a in new if a.id not in self._due]
        step = self.interval / len(spread) if spread else 0.0
        for n, account in enumerate(spread):
            self._due[account.id] = now + n * step
        for account in accounts:
            if account.status in LIMITED and account.cooldown_until > now:
                self._recheck[account.id] = account.cooldown_until
        return {i: min(d, self._recheck.get(i, d)) for i, d in self._due.items()}

    def next_due(self) -> float:
        now = self.clock()
        due = list(self._plan(now).values())
        if self._pruned_at is not None:
            due.append(self._pruned_at + PRUNE_EVERY_SECONDS)
        return min(due) if due else now + self.interval

    async def tick(self) -> bool:
        if not self.enabled:
            return False
        now = self.clock()
        plan = self._plan(now)
        due = {i for i, at in plan.items() if at <= now}
        prune_due = self._pruned_at is None or now >= self._pruned_at + PRUNE_EVERY_SECONDS
        if not due and not prune_due:
            return False
        await self.run_once(only=due)
        return True

    def _after_run(self, start: float, end: float) -> None:
        self._next = None

    # -- one run ------------------------------------------------------------------------------
    async def work(self, only: set[str] | None = None, **options: Any) -> None:
        """Fetch the usage of ``only`` these account ids (default: every polled account), then prune."""
        accounts = [a for a in self.polled() if only is None or a.id in only]
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(account: Account) -> None:
            async with semaphore:
                await self.refresh_account(account)

        await asyncio.gather(*(one(a) for a in accounts))
        await self._prune()

    async def refresh_account(self, account: Account) -> None:
        """Fetch and apply one account's usage; problems are recorded, never raised."""
        started = self.clock()
        self._due[account.id] = started + self.interval
        self._recheck.pop(account.id, None)
        try:
            data = await self.fetch(account)
        except AccountGone as exc:
            self.lb.pool.set_status(account, AccountStatus.DEACTIVATED, str(exc)[:200])
            self.problem(f"{account.label}: deactivated ({exc})")
            return
        except (FetchError, JobError) as exc:
            self.problem(f"{account.label}: {exc}")
            return
        self.apply(account, data, self.clock())
        await self._snapshot(account, self.clock())

    def apply(self, account: Account, data: Mapping[str, Any], now: float) -> None:
        """Update ``account`` (in the pool) from a usage answer, including its limit status."""
        pool = self.lb.pool
        if account.status not in POLLED:  # paused or deactivated meanwhile: keep what a person set
            apply_usage(account, data, now)
            pool.mark_dirty(account)
            return
        limit = apply_usage(account, data, now)
        if limit is not None:
            status, until, reason = limit
            if until <= now:  # exhausted but no (future) reset time: look again after a while
                until = now + min(self.interval, 300.0)
            account.cooldown_until = until  # the usage answer is authoritative about the reset time
            pool.set_status(account, status, reason)
            pool.mark_dirty(account, STATUS)
            if until > now:
                self._recheck[account.id] = until
        elif account.status in LIMITED:
            account.cooldown_until = min(account.cooldown_until, now)
            pool.set_status(account, AccountStatus.ACTIVE, None)
            pool.mark_dirty(account, STATUS)
        pool.mark_dirty(account)

    async def fetch(self, account: Account) -> Mapping[str, Any]:
        """The usage answer; on 401 the token is refreshed (forced) and the request tried once more.

        :raises AccountGone: 402/404 or a deactivation code.
        :raises FetchError: retries exhausted, 401 after refresh, or an unusable answer.
        """
        token, answer = await self._get(account)
        if answer.status == 401 and self._deactivated(answer) is None:
            if not await self.lb.tokens.refresh(account, force=True, failed=token):
                raise FetchError("HTTP 401 and the token refresh did not succeed")
            _, answer = await self._get(account)
            if answer.status == 401 and self._deactivated(answer) is None:
                raise FetchError("HTTP 401 again after a token refresh")
        if (reason := self._deactivated(answer)) is not None:
            raise AccountGone(reason)
        if answer.status != 200:
            message = answer.message()
            raise FetchError(f"HTTP {answer.status}" + (f": {message}" if message else ""))
        try:
            data = answer.json()
        except (ValueError, UnicodeDecodeError):
            raise FetchError("usage answer is not JSON") from None
        if not isinstance(data, dict):
            raise FetchError("usage answer is not a JSON object")
        return data

    @staticmethod
    def _deactivated(answer: Answer) -> str | None:
        code = answer.error_code()
        message = answer.message()
        if answer.status in (402, 404) or code in DEACTIVATING_CODES or "has been deactivated" in message.lower():
            return f"usage endpoint answered HTTP {answer.status}" + (f": {message}" if message else "")
        return None

    async def _get(self, account: Account) -> tuple[str, Answer]:
        """The access token sent and the answer."""
        try:
            token = await self.lb.tokens.access_token(account)
        except UpstreamError as exc:
            raise JobError(exc.message) from None
        settings = self.lb.settings
        if self.client is None:
            raise JobError("scheduler not started (no HTTP client)")
        return token, await get_with_retries(
            self.client, settings.upstream_base_url.rstrip("/") + "/wham/usage",
            headers=account_headers(token, account.chatgpt_account_id),
            timeout=settings.usage_fetch_timeout_seconds, retries=settings.usage_fetch_max_retries,
            backoff=self.backoff)

    # -- database -----------------------------------------------------------------------------
    async def _snapshot(self, account: Account, now: float) -> None:
        store = self.lb.store
        if store is None:
            return
        try:
            await store.save_usage_snapshot(account.id, primary=account.primary, secondary=account.secondary,
                                            credits=account.credits, at=now)
        except Exception as exc:
            self.problem(f"{account.label}: could not save the usage snapshot ({type(exc).__name__})")

    async def _prune(self) -> None:
        now = self.clock()
        if self._pruned_at is not None and now < self._pruned_at + PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = now
        if self.lb.store is None:
            return
        cutoff = now - self.lb.settings.usage_history_retention_days * 86400
        try:
            await self.lb.store.prune_snapshots(cutoff)
        except Exception as exc:
            self.problem(f"could not prune usage snapshots ({type(exc).__name__})")
        days = self.lb.settings.request_log_retention_days
        if days and self.lb.sessionmaker is not None:
            from codexlb.db.requestlog import prune_request_logs

            try:
                await prune_request_logs(self.lb.sessionmaker, now - days * 86400)
            except Exception as exc:
                self.problem(f"could not prune the request log ({type(exc).__name__})")
