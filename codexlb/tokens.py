"""Access tokens for upstream calls (refresh logic lives in :mod:`codexlb.accounts.refresh`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from codexlb.errors import UpstreamError

if TYPE_CHECKING:
    from codexlb.app import CodexLB
    from codexlb.types import Account


class TokenManager:
    """Hands out each account's current access token."""

    def __init__(self, app: CodexLB) -> None:
        self.app = app

    async def access_token(self, account: Account) -> str:
        """The account's access token (refreshed first when stale)."""
        creds = self.app.pool.credentials.get(account.id)
        if creds is None:
            raise UpstreamError(f"account {account.label} has no access token", code="no_token",
                                phase="connect")
        return creds.access_token

    async def refresh(self, account: Account, *, force: bool = False) -> bool:
        """Refresh the account's tokens; ``True`` when a new access token is ready."""
        return False
