"""``open_store``: the account store for one-shot commands (migrated database, checked key)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sqlalchemy.pool import NullPool

from codexlb.db.crypto import load_cipher
from codexlb.db.engine import make_engine, make_sessionmaker
from codexlb.db.migrate import prepare_database
from codexlb.db.store import AccountStore

if TYPE_CHECKING:
    from codexlb.settings import Settings


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[AccountStore]:
    """``async with open_store(settings) as store:`` — migrates as configured, closes the engine after.

    :raises ConfigError: key file problems or a schema that may not be migrated.
    :raises MigrationFailed: the migration failed.
    """
    settings.ensure_dirs()
    engine = make_engine(settings, poolclass=NullPool)
    try:
        await prepare_database(settings, engine)
        cipher = await load_cipher(settings, engine)
        yield AccountStore(make_sessionmaker(engine), cipher)
    finally:
        await engine.dispose()
