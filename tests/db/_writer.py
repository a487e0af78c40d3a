"""Child process of test_crash_safety: writes accounts forever, printing each id once committed.

Usage: python _writer.py DATABASE_URL KEY_FILE
"""

from __future__ import annotations

import asyncio
import sys

from codexlb.db.crypto import TokenCipher
from codexlb.db.engine import make_engine, make_sessionmaker
from codexlb.db.store import AccountStore
from codexlb.settings import Settings


async def main(url: str, key_file: str) -> None:
    engine = make_engine(Settings(database_url=url, encryption_key_file=key_file))
    with open(key_file, "rb") as handle:
        store = AccountStore(make_sessionmaker(engine), TokenCipher(handle.read().strip()))
    n = 0
    while True:
        n += 1
        account, _ = await store.upsert(chatgpt_account_id=f"crash-{n}", email=f"c{n}@example.com",
                                        plan_type="plus", access_token="a" * 2000, refresh_token=f"r{n}",
                                        id_token=None)
        print(account.id, flush=True)  # only after the commit returned


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
