"""Dashboard credentials and sessions in the database (shared by every replica and the CLI).

- the password: an argon2id hash in ``meta`` (``dashboard.password``);
- the TOTP secret: encrypted with the token key in ``meta`` (``dashboard.totp``), only once enabled;
- the cookie signing key: random, in ``meta`` (``dashboard.cookie_secret``);
- sessions: ``dashboard_sessions``, keyed by the SHA-256 of the id the cookie carries.

Changing the password ends every admin session.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from codexlb.db.engine import begin_write
from codexlb.db.models import DashboardSessionRow, MetaRow
from codexlb.db.registry import get_meta, put_meta

if TYPE_CHECKING:
    from argon2 import PasswordHasher
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from codexlb.db.crypto import TokenCipher

PASSWORD_KEY = "dashboard.password"
TOTP_KEY = "dashboard.totp"
SECRET_KEY = "dashboard.cookie_secret"
MIN_PASSWORD_LENGTH = 8


@cache
def _hasher() -> PasswordHasher:
    """The argon2 hasher, imported at the first sign-in or password change (not by a serving proxy)."""
    from argon2 import PasswordHasher

    return PasswordHasher()


@dataclass(frozen=True, slots=True)
class DashboardSession:
    id_hash: str
    kind: str
    """``admin`` or ``key`` (an API-key holder's own usage page)."""
    subject: str | None
    csrf_token: str
    expires_at: float
    created_at: float


def _hash_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def check_password_text(password: str) -> str | None:
    """Why ``password`` cannot be used, or ``None``."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must have at least {MIN_PASSWORD_LENGTH} characters"
    if password != password.strip():
        return "the password must not start or end with spaces"
    return None


async def set_password(sessionmaker: async_sessionmaker[AsyncSession], password: str) -> None:
    """Store the argon2 hash of ``password`` and end every admin session."""
    await put_meta(sessionmaker, PASSWORD_KEY, _hasher().hash(password))
    async with begin_write(sessionmaker) as session:
        await session.execute(delete(DashboardSessionRow).where(DashboardSessionRow.kind == "admin"))


async def password_hash(sessionmaker: async_sessionmaker[AsyncSession]) -> str | None:
    return await get_meta(sessionmaker, PASSWORD_KEY)


def verify_password(stored_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash`` (argon2, constant time)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def totp_secret(sessionmaker: async_sessionmaker[AsyncSession], cipher: TokenCipher) -> str | None:
    """The enabled TOTP secret (base32), or ``None``."""
    value = await get_meta(sessionmaker, TOTP_KEY)
    return None if not value else cipher.decrypt(value)


async def set_totp_secret(sessionmaker: async_sessionmaker[AsyncSession], cipher: TokenCipher,
                          secret: str | None) -> None:
    """Enable TOTP with ``secret`` (base32), or disable it with ``None``."""
    if secret is None:
        async with begin_write(sessionmaker) as session:
            await session.execute(delete(MetaRow).where(MetaRow.key == TOTP_KEY))
        return
    await put_meta(sessionmaker, TOTP_KEY, cipher.encrypt(secret))


async def cookie_secret(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    """The key that signs session cookies (created on first use, shared by replicas)."""
    value = await get_meta(sessionmaker, SECRET_KEY)
    if value is None:
        await put_meta(sessionmaker, SECRET_KEY, secrets.token_urlsafe(48))
        value = await get_meta(sessionmaker, SECRET_KEY)
    assert value is not None
    return value


async def create_session(sessionmaker: async_sessionmaker[AsyncSession], *, kind: str, lifetime: float,
                         subject: str | None = None) -> tuple[str, DashboardSession]:
    """A new session; returns the id for the cookie (never stored) and the session."""
    session_id = secrets.token_urlsafe(32)
    now = time.time()
    row = DashboardSessionRow(id_hash=_hash_id(session_id), kind=kind, subject=subject,
                              csrf_token=secrets.token_urlsafe(32), created_at=now, expires_at=now + lifetime)
    async with begin_write(sessionmaker) as session:
        await session.execute(delete(DashboardSessionRow).where(DashboardSessionRow.expires_at < now))
        session.add(row)
    return session_id, DashboardSession(row.id_hash, kind, subject, row.csrf_token, row.expires_at, now)


async def load_session(sessionmaker: async_sessionmaker[AsyncSession], session_id: str,
                       ) -> DashboardSession | None:
    """The live session with this id, or ``None`` (unknown or expired)."""
    async with sessionmaker() as session:
        row = (await session.execute(select(DashboardSessionRow).where(
            DashboardSessionRow.id_hash == _hash_id(session_id)))).scalar_one_or_none()
    if row is None or row.expires_at <= time.time():
        return None
    return DashboardSession(row.id_hash, row.kind, row.subject, row.csrf_token, row.expires_at, row.created_at)


async def end_session(sessionmaker: async_sessionmaker[AsyncSession], id_hash: str) -> None:
    async with begin_write(sessionmaker) as session:
        await session.execute(delete(DashboardSessionRow).where(DashboardSessionRow.id_hash == id_hash))
