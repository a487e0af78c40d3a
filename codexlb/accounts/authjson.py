"""Codex ``~/.codex/auth.json`` (protocol.md §7): read (snake_case or camelCase keys) and write.

An import is checked as a whole before anything is stored (:func:`check_batch`): the CLI and the
HTTP API import every document or none.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codexlb.accounts.claims import decode_payload, expires_at, identity
from codexlb.accounts.login import save_login
from codexlb.accounts.oauth import OAuthTokens
from codexlb.errors import CodexLBError

if TYPE_CHECKING:
    from codexlb.db.store import AccountStore, StoredAccount

LAST_REFRESH_KEYS = ("last_refresh", "lastRefresh", "lastRefreshAt", "last_refresh_at")


class AuthFileError(CodexLBError):
    """An auth.json document that cannot be imported or exported (the message names why)."""


class AuthBatchError(AuthFileError):
    """Some documents of an import are invalid; ``problems`` has one line per document (nothing stored)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems) + "; nothing was imported")
        self.problems = problems


@dataclass(frozen=True, slots=True)
class AuthFile:
    """The parts of an auth.json codexlb uses."""

    tokens: OAuthTokens
    account_id: str | None
    last_refresh: float | None


def _pick(data: dict[str, Any], *keys: str) -> Any:
    return next((data[k] for k in keys if data.get(k) not in (None, "")), None)


def parse_timestamp(value: Any) -> float | None:
    """An RFC 3339 timestamp (any number of fraction digits, ``Z``) or epoch seconds as unix time."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def parse_auth_json(data: Any) -> AuthFile:
    """Validate an auth.json document; raises :class:`AuthFileError` with a reason (never a token)."""
    if not isinstance(data, dict):
        raise AuthFileError("not an auth.json document: expected a JSON object")
    mode = data.get("auth_mode") or data.get("authMode")
    tokens = data.get("tokens")
    if mode in ("apikey", "apiKey") or (not isinstance(tokens, dict) and data.get("OPENAI_API_KEY")):
        raise AuthFileError("this auth.json holds an API key, not a ChatGPT login; only ChatGPT logins "
                            "can be pooled (log in with `codex login` first)")
    if not isinstance(tokens, dict):
        raise AuthFileError("no \"tokens\" object: not a Codex ChatGPT auth.json")
    access = _pick(tokens, "access_token", "accessToken")
    refresh = _pick(tokens, "refresh_token", "refreshToken")
    id_token = _pick(tokens, "id_token", "idToken")
    named = (("id_token", id_token), ("access_token", access), ("refresh_token", refresh))
    missing = [name for name, value in named if not value]
    if missing:
        raise AuthFileError(f"tokens lack {' and '.join(missing)}")
    if not all(isinstance(value, str) for _, value in named):
        raise AuthFileError("tokens must be strings")
    account_id = _pick(tokens, "account_id", "accountId")
    _check_tokens(id_token, access, str(account_id) if account_id else None)
    return AuthFile(OAuthTokens(access, refresh, id_token), str(account_id) if account_id else None,
                    parse_timestamp(_pick(data, *LAST_REFRESH_KEYS)))


def _check_tokens(id_token: str, access: str, account_id: str | None) -> None:
    """Both tokens are JWTs (``header.payload.signature``, JSON payload) naming a ChatGPT account."""
    for name, token in (("id_token", id_token), ("access_token", access)):
        if not decode_payload(token):
            raise AuthFileError(f"{name} is not a JWT (expected header.payload.signature with a JSON "
                                "payload); copy the auth.json Codex wrote, unchanged")
    if expires_at(access) is None:
        raise AuthFileError("access_token has no exp (expiry) claim; copy the auth.json Codex wrote, unchanged")
    if not (identity(id_token, access).chatgpt_account_id or account_id):
        raise AuthFileError("the tokens name no ChatGPT account (no chatgpt_account_id claim, no "
                            "tokens.account_id)")


def check_batch(entries: Iterable[tuple[str, Callable[[], AuthFile]]]) -> list[AuthFile]:
    """Read every entry (``(where, read)``); all of them, or :class:`AuthBatchError` naming each failure.

    ``where`` prefixes the entry's message unless the message already starts with it (file paths).
    """
    parsed: list[AuthFile] = []
    problems: list[str] = []
    for where, read in entries:
        try:
            parsed.append(read())
        except AuthFileError as exc:
            text = str(exc)
            problems.append(text if not where or text.startswith(where) else f"{where}: {text}")
    if problems:
        raise AuthBatchError(problems)
    return parsed


def load_auth_file(path: str | os.PathLike[str]) -> AuthFile:
    """Read and validate one file; errors name the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AuthFileError(f"{path}: not valid JSON (line {getattr(exc, 'lineno', '?')})") from None
    try:
        return parse_auth_json(data)
    except AuthFileError as exc:
        raise AuthFileError(f"{path}: {exc}") from None


async def import_auth(store: AccountStore, auth: AuthFile, *, label: str | None = None,
                      ) -> tuple[StoredAccount, bool]:
    """Store an auth.json's tokens; re-importing the same ChatGPT account updates it."""
    return await save_login(store, auth.tokens, label=label, account_id=auth.account_id,
                            refreshed_at=auth.last_refresh)


def build_auth_json(account: StoredAccount) -> dict[str, Any]:
    """An auth.json Codex can use for ``account``."""
    if not account.access_token or not account.refresh_token or not account.id_token:
        raise AuthFileError(f"account {account.label} lacks stored tokens (Codex needs id, access and refresh "
                            "tokens); log in again with `codexlb accounts login`")
    stamp = datetime.fromtimestamp(account.token_refreshed_at or account.token_issued_at or account.updated_at,
                                   UTC)
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {"id_token": account.id_token, "access_token": account.access_token,
                   "refresh_token": account.refresh_token, "account_id": account.chatgpt_account_id},
        "last_refresh": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def dump_auth_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def write_auth_json(path: str | os.PathLike[str], data: dict[str, Any], *, overwrite: bool = False) -> None:
    """Write pretty-printed with mode 0600 (also when the file existed with a wider mode).

    Missing parent folders are created (mode 0700). An existing file is replaced only with
    ``overwrite``; otherwise :class:`FileExistsError`.
    """
    Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        if os.name == "posix":
            os.fchmod(handle.fileno(), 0o600)
        handle.write(dump_auth_json(data))
