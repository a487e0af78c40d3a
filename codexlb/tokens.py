"""Access tokens for upstream calls, refreshed before use and after a 401 (see :mod:`codexlb.accounts.refresh`).

Single flight: in this process, concurrent refreshes of one account share one task; across
processes, :meth:`AccountStore.refresh_locked` serialises them and later holders reuse the fresh row.
A forced refresh (after a 401) is told which token failed (the caller's, e.g. the one an
:class:`codexlb.attempt.UpstreamAttempt` sent), so a request arriving after another already
refreshed just retries with the new token.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING

from codexlb.accounts.claims import identity
from codexlb.accounts.refresh import RefreshFailed, refresh_due, refresh_stored, token_expired
from codexlb.errors import UpstreamError
from codexlb.pool import Credentials
from codexlb.types import AccountStatus

if TYPE_CHECKING:
    from codexlb.db.store import StoredAccount
    from codexlb.types import Account, AppView

log = logging.getLogger("codexlb.tokens")

TRANSIENT_RETRY_SECONDS = 60.0
"""After a transient refresh failure, refresh-before-use waits this long before trying again."""


class TokenManager:
    """Hands out each account's current access token and refreshes it."""

    def __init__(self, app: AppView) -> None:
        self.app = app
        self._inflight: dict[str, asyncio.Task[bool]] = {}
        self._retry_at: dict[str, float] = {}
        self.refresh_results = {"ok": 0, "failed": 0}
        """Refreshes by outcome: ``ok`` when a new token arrived (read by the metrics plugin)."""

    # -- handing out ------------------------------------------------------------------------

    async def access_token(self, account: Account) -> str:
        """The account's access token, refreshed first when due.

        :raises UpstreamError: no token, the account needs a new login, or the token expired and could
            not be refreshed (retryable: the pipeline fails over to another account).
        """
        creds = self.app.pool.credentials.get(account.id)
        if creds is None:
            raise UpstreamError(f"account {account.label} has no access token", code="no_token", phase="connect")
        now = time.time()
        if self._due(creds, now) and now >= self._retry_at.get(account.id, 0.0):
            await self.refresh(account)
            creds = self.app.pool.credentials.get(account.id) or creds
        if account.status is AccountStatus.REAUTH_REQUIRED:
            raise UpstreamError(f"account {account.label} needs a new login ({account.status_reason})",
                                code="reauth_required", phase="connect")
        if token_expired(creds.access_token, now):
            raise UpstreamError(f"account {account.label}: access token expired and could not be refreshed yet",
                                code="token_refresh_failed", phase="connect",
                                cooldown_seconds=TRANSIENT_RETRY_SECONDS)
        return creds.access_token

    def _due(self, creds: Credentials, now: float) -> bool:
        return refresh_due(self.app.settings, creds.access_token, creds.refreshed_at, now)

    # -- refreshing -------------------------------------------------------------------------

    async def refresh(self, account: Account, *, force: bool = False, failed: str | None = None) -> bool:
        """Refresh the account's tokens; ``True`` when a new (or still fresh) access token is ready.

        ``force`` (after an upstream 401): ``True`` only when the token differs from the one that
        failed, ``failed`` (the token the upstream refused; default: the current one).
        """
        creds = self.app.pool.credentials.get(account.id)
        if creds is None or account.status is AccountStatus.REAUTH_REQUIRED:
            return False
        stale = (failed if force else None) or creds.access_token
        if force and creds.access_token != stale:
            return True
        task = self._inflight.get(account.id)
        if task is None:
            task = self.app.tasks.spawn(self._refresh(account, force, stale), f"token-refresh-{account.id[:8]}")
            self._inflight[account.id] = task
            task.add_done_callback(functools.partial(self._forget, account.id))
        ok = await asyncio.shield(task)
        if force:
            current = self.app.pool.credentials.get(account.id)
            return current is not None and current.access_token != stale
        return ok

    async def refresh_if_due(self, account: Account) -> bool:
        """For the background job: refresh when due (and not backing off); ``True`` when refreshed."""
        creds = self.app.pool.credentials.get(account.id)
        now = time.time()
        if (creds is None or account.status is AccountStatus.REAUTH_REQUIRED or not self._due(creds, now)
                or now < self._retry_at.get(account.id, 0.0)):
            return False
        ok = await self.refresh(account)
        current = self.app.pool.credentials.get(account.id)
        return ok and current is not None and current.access_token != creds.access_token

    def _forget(self, account_id: str, task: asyncio.Task[bool]) -> None:
        if self._inflight.get(account_id) is task:
            del self._inflight[account_id]

    async def _refresh(self, account: Account, force: bool, stale: str) -> bool:
        """One refresh through the store; never raises (the outcome is logged and applied)."""
        store = self.app.store
        if store is None:
            log.warning("account %s: cannot refresh tokens before the database is open", account.label)
            return False
        try:
            row = await refresh_stored(store, self.app.settings, account.id, stale_token=stale, force=force)
        except RefreshFailed as exc:
            self.refresh_results["failed"] += 1
            if exc.permanent:
                await self._needs_login(account, exc.reason)
            else:
                self._retry_at[account.id] = time.time() + TRANSIENT_RETRY_SECONDS
                log.warning("account %s: token refresh failed (%s); the account stays in use while its "
                            "access token is valid, retry in %d s", account.label, exc.reason,
                            TRANSIENT_RETRY_SECONDS)
            return False
        except KeyError:
            log.info("account %s was removed while refreshing its tokens", account.label)
            return False
        except Exception as exc:
            self.refresh_results["failed"] += 1
            self._retry_at[account.id] = time.time() + TRANSIENT_RETRY_SECONDS
            log.error("account %s: token refresh failed: %s", account.label, type(exc).__name__)
            return False
        self._retry_at.pop(account.id, None)
        if row.access_token != stale:
            self.refresh_results["ok"] += 1
        self._apply(account, row, refreshed=row.access_token != stale)
        return bool(row.access_token)

    def _apply(self, account: Account, row: StoredAccount, *, refreshed: bool) -> None:
        """Put the stored tokens into the pool (and a plan change carried by the new id token)."""
        pool = self.app.pool
        if not row.access_token:
            return
        pool.credentials[row.id] = Credentials(row.access_token, row.refresh_token, row.id_token,
                                               row.token_refreshed_at)
        live = pool.get(row.id) or account
        plan = identity(row.id_token, row.access_token).plan_type
        if plan and plan != live.plan_type:
            live.plan_type = plan
            pool.mark_dirty(live)
        if refreshed:
            log.info("account %s: tokens refreshed", live.label)

    async def _needs_login(self, account: Account, reason: str) -> None:
        """A permanent refusal: out of routing until a new login, visible in ``accounts list``."""
        live = self.app.pool.get(account.id) or account
        text = f"token refresh refused: {reason}"
        self.app.pool.set_status(live, AccountStatus.REAUTH_REQUIRED, text)
        log.warning("account %s needs a new login (%s); run `codexlb accounts login` for it", live.label, reason)
        if self.app.store is not None:
            try:
                await self.app.store.update(account.id, status=AccountStatus.REAUTH_REQUIRED.value,
                                            status_reason=text)
            except Exception as exc:  # the pool flush writes it later
                log.warning("account %s: could not save status: %s", live.label, type(exc).__name__)
