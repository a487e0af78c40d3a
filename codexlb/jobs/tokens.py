"""Proactive token refresh: keep idle accounts' tokens fresh before anyone needs them.

Busy accounts get their tokens refreshed on the request path; an account nobody used for days would
otherwise reach the first request with a stale or expired token. Every :data:`CHECK_INTERVAL_SECONDS`
this job calls :meth:`codexlb.tokens.TokenManager.refresh_if_due` for each account that may still be
refreshed, one after another, so the decision (``TOKEN_REFRESH_INTERVAL_DAYS`` or near expiry) and the
single flight (in-process and across replicas) are exactly the request path's.
"""

from __future__ import annotations

from typing import Any

from codexlb.jobs.base import Job, JobError
from codexlb.types import AccountStatus

CHECK_INTERVAL_SECONDS = 600.0
FIRST_CHECK_DELAY_SECONDS = 60.0
SKIPPED = (AccountStatus.DEACTIVATED, AccountStatus.REAUTH_REQUIRED)
"""Accounts left alone: deactivated ones, and those that need a person to log in again."""


class TokenRefreshJob(Job):
    """Calls ``lb.tokens.refresh_if_due(account)`` for every refreshable account."""

    name = "tokens"
    description = "refresh tokens of idle accounts before they go stale"

    @property
    def interval(self) -> float:
        return CHECK_INTERVAL_SECONDS

    @property
    def first_delay(self) -> float:
        return FIRST_CHECK_DELAY_SECONDS

    async def work(self, **options: Any) -> None:
        refresh_if_due = getattr(self.lb.tokens, "refresh_if_due", None)
        if refresh_if_due is None:
            raise JobError("this TokenManager has no refresh_if_due()")
        for account in self.lb.pool.all():
            if account.status in SKIPPED or account.id not in self.lb.pool.credentials:
                continue
            try:
                await refresh_if_due(account)
            except Exception as exc:  # one account's failure must not stop the others
                self.problem(f"{account.label}: refresh failed ({type(exc).__name__}: {str(exc)[:200]})")
