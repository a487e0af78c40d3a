"""Usage per key and per account, read from the request log (``keys usage``, ``GET /api/keys/usage``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select

from codexlb.db.models import AccountRow, ApiKeyRow, RequestLogRow
from codexlb.keys.ring import STATIC_NAME

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


async def usage_by_key(sessionmaker: async_sessionmaker[AsyncSession], *, since: float,
                       key_id: str | None = None) -> list[dict[str, Any]]:
    """One row per (key, account) with requests, tokens, cached share, errors and last use since ``since``.

    Rows without a key (no keys were required) have ``key: null``; static keys are named
    ``CODEX_LB_API_KEYS``. Sorted by key name, then by requests (most first).
    """
    log = RequestLogRow
    errors = func.sum(case(((log.status >= 400) | log.error_code.is_not(None), 1), else_=0))
    query = (select(log.api_key_id, log.account_id, func.count().label("requests"),
                    func.coalesce(func.sum(log.input_tokens), 0), func.coalesce(func.sum(log.cached_tokens), 0),
                    func.coalesce(func.sum(log.output_tokens), 0), errors, func.max(log.time))
             .where(log.time >= since).group_by(log.api_key_id, log.account_id))
    if key_id is not None:
        query = query.where(log.api_key_id == key_id)
    async with sessionmaker() as session:
        rows = (await session.execute(query)).all()
        names = {kid: name for kid, name in (await session.execute(select(ApiKeyRow.id, ApiKeyRow.name))).all()}
        labels = {aid: label for aid, label in (await session.execute(select(AccountRow.id, AccountRow.label))).all()}
    out = []
    for kid, account_id, requests, input_tokens, cached, output, errs, last in rows:
        name = names.get(kid) if kid and not kid.startswith("static:") else (STATIC_NAME if kid else None)
        out.append({
            "key_id": kid, "key": name, "account_id": account_id,
            "account": labels.get(account_id) if account_id else None,
            "requests": int(requests), "input_tokens": int(input_tokens), "cached_tokens": int(cached),
            "cached_share": round(int(cached) / int(input_tokens), 4) if input_tokens else 0.0,
            "output_tokens": int(output), "total_tokens": int(input_tokens) + int(output),
            "errors": int(errs or 0), "last_used_at": last,
        })
    out.sort(key=lambda r: (r["key"] is None, r["key"] or "", -r["requests"], r["account"] or ""))
    return out
