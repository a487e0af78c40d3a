"""One browser login from authorize URL to stored account, shared by the CLI and the HTTP API.

A :class:`LoginSession` holds the PKCE state, optionally runs the callback listener, accepts the
callback (from the listener or pasted), exchanges the code and stores the account. It finishes once:
with an account, or with a :class:`LoginError` (nothing stored).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from codexlb.accounts.callback import CallbackServer
from codexlb.accounts.claims import identity
from codexlb.accounts.oauth import (
    LoginError,
    OAuthTokens,
    Pkce,
    authorize_url,
    check_callback,
    exchange_code,
    parse_callback,
)

if TYPE_CHECKING:
    from codexlb.db.store import AccountStore, StoredAccount
    from codexlb.settings import Settings

log = logging.getLogger("codexlb.accounts")

OnSaved = Callable[["StoredAccount"], Awaitable[None] | None]


async def save_login(store: AccountStore, tokens: OAuthTokens, *, label: str | None = None,
                     account_id: str | None = None, refreshed_at: float | None = None,
                     ) -> tuple[StoredAccount, bool]:
    """Store tokens (encrypted) as the account they belong to; ``(account, created)``.

    The ChatGPT account id comes from the id token (else ``account_id``); the same ChatGPT account
    is updated, never duplicated.
    """
    who = identity(tokens.id_token, tokens.access_token)
    chatgpt_id = who.chatgpt_account_id or account_id
    if not chatgpt_id:
        raise LoginError("the tokens name no ChatGPT account (no chatgpt_account_id in the id token); "
                         "nothing was stored.", "no_account_id")
    return await store.upsert(chatgpt_account_id=chatgpt_id, email=who.email, plan_type=who.plan_type,
                              access_token=tokens.access_token, refresh_token=tokens.refresh_token,
                              id_token=tokens.id_token, label=label, token_refreshed_at=refreshed_at)


def with_port(uri: str, port: int) -> str:
    """``uri`` with its port replaced (for a callback listener bound to port 0)."""
    parts = urlsplit(uri)
    host = parts.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, parts.fragment))


def describe(account: StoredAccount, created: bool) -> str:
    """``added account fake1@example.com (plan plus, id 1a2b3c4d)`` — no secrets."""
    verb = "added" if created else "updated"
    plan = f"plan {account.plan_type}" if account.plan_type else "plan unknown"
    email = f" <{account.email}>" if account.email and account.email != account.label else ""
    return f"{verb} account {account.label}{email} ({plan}, id {account.id[:8]})"


class LoginSession:
    """One PKCE login. ``status`` is ``pending``, ``success`` or ``error``."""

    def __init__(self, settings: Settings, store: AccountStore, *, label: str | None = None,
                 on_saved: OnSaved | None = None) -> None:
        self.settings, self.store, self.label, self.on_saved = settings, store, label, on_saved
        self.pkce = Pkce.new()
        self.redirect_uri = settings.oauth_redirect_uri
        self.status = "pending"
        self.error: LoginError | None = None
        self.account: StoredAccount | None = None
        self.created = False
        self._done = asyncio.Event()
        self._lock = asyncio.Lock()
        self._server: CallbackServer | None = None

    @property
    def url(self) -> str:
        """The authorize URL to open in a browser."""
        return authorize_url(self.settings, self.pkce, self.redirect_uri)

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.running

    async def listen(self) -> None:
        """Start the callback listener on ``OAUTH_CALLBACK_HOST:OAUTH_CALLBACK_PORT``.

        :raises LoginError: ``port_in_use``.
        """
        settings = self.settings
        server = CallbackServer(settings.oauth_callback_host, settings.oauth_callback_port,
                                urlsplit(self.redirect_uri).path or "/", self._on_callback)
        port = await server.start()
        if settings.oauth_callback_port == 0:
            self.redirect_uri = with_port(self.redirect_uri, port)
        self._server = server

    async def close(self) -> None:
        """Stop the listener (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _on_callback(self, query: dict[str, str]) -> tuple[bool, str]:
        try:
            account = await self.complete_query(query)
        except LoginError as exc:
            return False, exc.message
        return True, f"codexlb {describe(account, self.created)}. You can close this tab."

    async def complete(self, pasted: str) -> StoredAccount:
        """Finish with a pasted callback URL (or its query)."""
        return await self.complete_query(parse_callback(pasted))

    async def complete_query(self, query: dict[str, str]) -> StoredAccount:
        """Check the callback, exchange the code, store the account; raises :class:`LoginError`."""
        async with self._lock:
            if self.status != "pending":
                raise LoginError(f"this login has already finished ({self.status}); start a new one.", "finished")
            try:
                code = check_callback(query, self.pkce.state)
                tokens = await exchange_code(self.settings, code, self.pkce.verifier, self.redirect_uri)
                account, created = await save_login(self.store, tokens, label=self.label)
            except LoginError as exc:
                self._finish(error=exc)
                raise
            except Exception as exc:
                log.error("login: could not store the account: %s", type(exc).__name__)
                error = LoginError(f"login failed: could not store the account ({type(exc).__name__}); "
                                   "see the server log.", "store_failed")
                self._finish(error=error)
                raise error from None
            self.created = created
            await self._notify(account)
            self._finish(account=account)
        log.info("login: %s", describe(account, created))
        return account

    async def _notify(self, account: StoredAccount) -> None:
        if self.on_saved is None:
            return
        try:
            result = self.on_saved(account)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the account is stored; a failed notification must not undo the login
            log.exception("login: on_saved callback failed")

    def _finish(self, *, account: StoredAccount | None = None, error: LoginError | None = None) -> None:
        self.account, self.error = account, error
        self.status = "error" if error is not None else "success"
        self._done.set()

    async def expire(self, timeout: float) -> None:
        """End a still pending login with a ``timeout`` error (a callback being handled finishes first)."""
        async with self._lock:
            if self.status == "pending":
                self._finish(error=LoginError(
                    f"login timed out: no callback within {timeout:g} s (CODEX_LB_OAUTH_TIMEOUT_SECONDS or "
                    "--timeout); nothing was stored. Start the login again.", "timeout"))

    async def wait(self, timeout: float) -> StoredAccount:
        """Wait for the outcome; the account, or the :class:`LoginError` raised."""
        try:
            async with asyncio.timeout(timeout):
                await self._done.wait()
        except TimeoutError:
            await self.expire(timeout)
        return self.result()

    def result(self) -> StoredAccount:
        if self.error is not None:
            raise self.error
        assert self.account is not None
        return self.account

    def snapshot(self) -> dict[str, Any]:
        """Progress for the HTTP API (no secrets)."""
        out: dict[str, Any] = {"status": self.status, "listening": self.listening}
        if self.account is not None:
            out["account"] = {"id": self.account.id, "label": self.account.label, "email": self.account.email,
                              "plan_type": self.account.plan_type, "created": self.created}
        if self.error is not None:
            out["error"] = {"code": self.error.code, "message": self.error.message}
        return out
