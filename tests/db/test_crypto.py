"""Encryption at rest: key creation, missing and wrong keys, no plaintext in the database."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from codexlb.db.crypto import CHECK_KEY, TokenCipher, load_cipher
from codexlb.db.migrate import MigrationReport
from codexlb.db.registry import get_meta
from codexlb.db.store import AccountStore
from codexlb.errors import ConfigError
from codexlb.settings import Settings

SECRET = "sk-access-PLAINTEXT-7f3a9c"


async def _add_account(sessionmaker: async_sessionmaker[AsyncSession], cipher: TokenCipher) -> None:
    await AccountStore(sessionmaker, cipher).upsert(
        chatgpt_account_id="acc-1", email="a@example.com", plan_type="plus", access_token=SECRET,
        refresh_token="rt-PLAINTEXT-1", id_token="idt-PLAINTEXT-1")


def test_cipher_round_trip() -> None:
    cipher = TokenCipher.generate()
    token = cipher.encrypt("héllo")
    assert token != "héllo" and cipher.decrypt(token) == "héllo"
    assert cipher.matches(token) and not TokenCipher.generate().matches(token)


async def test_first_start_creates_private_key_and_check_value(
        settings: Settings, engine: AsyncEngine, migrated: MigrationReport,
        sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    key_file = Path(settings.encryption_key_file)
    assert not key_file.exists()
    cipher = await load_cipher(settings, engine)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    check = await get_meta(sessionmaker, CHECK_KEY)
    assert check is not None and cipher.matches(check)
    again = await load_cipher(settings, engine)  # second start: same key, accepted, file untouched
    assert again.decrypt(cipher.encrypt("x")) == "x"
    assert key_file.read_bytes() == key and await get_meta(sessionmaker, CHECK_KEY) == check


async def test_missing_key_file_with_encrypted_data_is_refused(
        settings: Settings, engine: AsyncEngine, cipher: TokenCipher,
        sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await _add_account(sessionmaker, cipher)
    key_file = Path(settings.encryption_key_file)
    key_file.unlink()
    with pytest.raises(ConfigError) as info:
        await load_cipher(settings, engine)
    assert str(info.value) == (
        f"encryption key file {key_file} is missing, but the database already holds tokens encrypted "
        f"with it. Restore the key file from your backup to {key_file} (or point "
        "CODEX_LB_ENCRYPTION_KEY_FILE at it). codexlb will not create a new key: the stored tokens "
        "could never be decrypted with it. The database has not been changed.")
    assert not key_file.exists()  # no replacement was generated
    async with sessionmaker() as session:
        stored = (await session.execute(text("SELECT access_token_enc FROM accounts"))).scalar_one()
    assert cipher.decrypt(stored) == SECRET  # the data is untouched


async def test_missing_key_file_with_only_a_check_value_is_refused(
        settings: Settings, engine: AsyncEngine, cipher: TokenCipher) -> None:
    Path(settings.encryption_key_file).unlink()
    with pytest.raises(ConfigError, match="is missing, but the database already holds tokens"):
        await load_cipher(settings, engine)


async def test_wrong_key_is_refused(settings: Settings, engine: AsyncEngine, cipher: TokenCipher,
                                    sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await _add_account(sessionmaker, cipher)
    key_file = Path(settings.encryption_key_file)
    key_file.write_bytes(Fernet.generate_key())
    with pytest.raises(ConfigError) as info:
        await load_cipher(settings, engine)
    assert str(info.value) == (
        f"encryption key file {key_file} does not match the data in the database: the stored tokens "
        "were encrypted with a different key. Restore the original key file from your backup (or "
        "point CODEX_LB_ENCRYPTION_KEY_FILE at it). The database has not been changed.")


async def test_wrong_key_is_refused_without_check_value(
        settings: Settings, engine: AsyncEngine, cipher: TokenCipher,
        sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await _add_account(sessionmaker, cipher)
    async with sessionmaker() as session, session.begin():  # data from before check values existed
        await session.execute(text("DELETE FROM meta"))
    Path(settings.encryption_key_file).write_bytes(Fernet.generate_key())
    with pytest.raises(ConfigError, match="does not match the data in the database"):
        await load_cipher(settings, engine)
    assert await get_meta(sessionmaker, CHECK_KEY) is None


async def test_malformed_key_file_is_refused(settings: Settings, engine: AsyncEngine,
                                             migrated: MigrationReport) -> None:
    key_file = Path(settings.encryption_key_file)
    key_file.parent.mkdir(parents=True)
    key_file.write_text("not a key")
    with pytest.raises(ConfigError, match="does not hold a valid Fernet key"):
        await load_cipher(settings, engine)


async def test_no_token_plaintext_in_the_database(
        settings: Settings, engine: AsyncEngine, cipher: TokenCipher,
        sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await _add_account(sessionmaker, cipher)
    if settings.sqlite_path is not None:
        await engine.dispose()  # flush and release the file
        files = settings.sqlite_path.parent.glob(settings.sqlite_path.name + "*")
        raw = b"".join(path.read_bytes() for path in files)
        assert b"a@example.com" in raw  # the check below can see row contents
    else:
        async with engine.connect() as conn:
            raw = "\n".join((await conn.execute(text("SELECT CAST(a AS text) FROM accounts a"))).scalars()
                            ).encode()
        assert b"a@example.com" in raw
    for plaintext in (SECRET, "rt-PLAINTEXT-1", "idt-PLAINTEXT-1", "PLAINTEXT"):
        assert plaintext.encode() not in raw
