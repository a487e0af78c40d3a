"""The ``account_spend`` table: quota tokens spent per account by every replica, as running totals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from codexlb.db.engine import begin_write
from codexlb.db.models import AccountSpendRow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


async def add_spend(sessionmaker: async_sessionmaker[AsyncSession], deltas: Mapping[str, float]) -> dict[str, float]:
    """Add ``deltas`` (account id -> tokens) to the totals in one transaction; every account's total after.

    Rows are written in account id order, so replicas adding at once never deadlock.
    """
    async with begin_write(sessionmaker) as session:
        module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        for account_id in sorted(deltas):
            insert = module.insert(AccountSpendRow).values(account_id=account_id, tokens=deltas[account_id])
            await session.execute(insert.on_conflict_do_update(
                index_elements=["account_id"], set_={"tokens": AccountSpendRow.tokens + insert.excluded.tokens}))
        rows = (await session.execute(select(AccountSpendRow.account_id, AccountSpendRow.tokens))).all()
    return {account_id: float(tokens) for account_id, tokens in rows}
