"""Encryption of tokens at rest (Fernet) and the safety rules around the key file.

* First start (no key file, no encrypted data): a new key is written with mode 0600 and a check
  value (a constant encrypted with the key) is stored in ``meta``.
* Key file missing while the database holds encrypted data: :class:`ConfigError`
  (:func:`key_missing_message`). A replacement key is never generated and the data is never touched.
* Key file present but not the key the data was written with: :class:`ConfigError`
  (:func:`key_mismatch_message`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from codexlb.db.models import AccountRow, MetaRow
from codexlb.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from codexlb.settings import Settings

log = logging.getLogger("codexlb.db")

CHECK_KEY = "encryption_check"
"""``meta`` key of the check value."""
CHECK_PLAINTEXT = b"codexlb encryption key check v1"

KEY_MISSING = (
    "encryption key file {path} is missing, but the database already holds tokens encrypted with "
    "it. Restore the key file from your backup to {path} (or point CODEX_LB_ENCRYPTION_KEY_FILE at "
    "it). codexlb will not create a new key: the stored tokens could never be decrypted with it. "
    "The database has not been changed."
)
KEY_MISMATCH = (
    "encryption key file {path} does not match the data in the database: the stored tokens were "
    "encrypted with a different key. Restore the original key file from your backup (or point "
    "CODEX_LB_ENCRYPTION_KEY_FILE at it). The database has not been changed."
)
KEY_UNREADABLE = (
    "encryption key file {path} cannot be used: {reason}. Point CODEX_LB_ENCRYPTION_KEY_FILE at the "
    "key file (or at a path where a new one may be created, on a first start)."
)
KEY_INVALID = (
    "encryption key file {path} does not hold a valid Fernet key (32 url-safe base64-encoded "
    "bytes). Restore the original key file from your backup."
)


def key_missing_message(path: Path | str) -> str:
    """The start-up error when the key file is gone but encrypted data exists."""
    return KEY_MISSING.format(path=path)


def key_mismatch_message(path: Path | str) -> str:
    """The start-up error when the key file holds a different key than the data was written with."""
    return KEY_MISMATCH.format(path=path)


def key_unreadable_message(path: Path | str, exc: OSError) -> str:
    """The start-up error when the key path is a folder, unreadable, or cannot be created."""
    reason = "it is a directory, not a file" if isinstance(exc, IsADirectoryError) else \
        (exc.strerror or type(exc).__name__).lower()
    return KEY_UNREADABLE.format(path=path, reason=reason)


def key_invalid_message(path: Path | str) -> str:
    """The start-up error when the key file is not a Fernet key at all."""
    return KEY_INVALID.format(path=path)


class TokenCipher:
    """Encrypts and decrypts token strings with one Fernet key."""

    __slots__ = ("_fernet",)

    def __init__(self, key: bytes | str) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def generate(cls) -> TokenCipher:
        """A cipher with a fresh random key (tests)."""
        return cls(Fernet.generate_key())

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """:raises cryptography.fernet.InvalidToken: wrong key or damaged text."""
        return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")

    def matches(self, ciphertext: str) -> bool:
        """Whether ``ciphertext`` was written with this key."""
        try:
            self._fernet.decrypt(ciphertext.encode("ascii"))
        except (InvalidToken, ValueError):
            return False
        return True


async def load_cipher(settings: Settings, engine: AsyncEngine) -> TokenCipher:
    """Load (or, on a database without encrypted data, create) the key and check it against the data.

    Needs a migrated database (the ``meta`` table).

    :raises ConfigError: the key file is missing while encrypted data exists, cannot be read or
        created (e.g. a directory is at its path), is not a Fernet key, or does not match the data.
    """
    path = settings.path("encryption_key_file")
    async with AsyncSession(engine) as session:
        check, sample = await _check_value(session), await _sample_ciphertext(session)
    try:
        if not path.exists():
            if check is not None or sample is not None:
                raise ConfigError(key_missing_message(path))
            key = _create_key_file(path)
        else:
            key = path.read_bytes().strip()
            _warn_if_readable(path)
    except OSError as exc:
        raise ConfigError(key_unreadable_message(path, exc)) from None
    try:
        cipher = TokenCipher(key)
    except (ValueError, TypeError):
        raise ConfigError(key_invalid_message(path)) from None
    probe = check if check is not None else sample
    if probe is not None and not cipher.matches(probe):
        raise ConfigError(key_mismatch_message(path))
    if check is None:
        await _store_check_value(engine, cipher, path)
    return cipher


async def _check_value(session: AsyncSession) -> str | None:
    return await session.scalar(select(MetaRow.value).where(MetaRow.key == CHECK_KEY))


async def _sample_ciphertext(session: AsyncSession) -> str | None:
    """Any stored ciphertext (databases written before the check value existed)."""
    row = (await session.execute(
        select(AccountRow.access_token_enc, AccountRow.refresh_token_enc, AccountRow.id_token_enc)
        .where(or_(AccountRow.access_token_enc.is_not(None), AccountRow.refresh_token_enc.is_not(None),
                   AccountRow.id_token_enc.is_not(None)))
        .limit(1))).first()
    return None if row is None else next(value for value in row if value is not None)


def _create_key_file(path: Path) -> bytes:
    """Write a new key with mode 0600; if another process won the race, use its key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    log.warning("created a new encryption key at %s; back it up: without it the stored tokens are lost",
                path)
    return key


def _warn_if_readable(path: Path) -> None:
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("encryption key file %s is readable by other users; chmod 600 it", path)


async def _store_check_value(engine: AsyncEngine, cipher: TokenCipher, path: Path) -> None:
    try:
        async with AsyncSession(engine) as session, session.begin():
            session.add(MetaRow(key=CHECK_KEY, value=cipher.encrypt(CHECK_PLAINTEXT.decode())))
    except IntegrityError:  # another process stored one first: it must be for the same key
        async with AsyncSession(engine) as session:
            existing = await _check_value(session)
        if existing is None or not cipher.matches(existing):
            raise ConfigError(key_mismatch_message(path)) from None
