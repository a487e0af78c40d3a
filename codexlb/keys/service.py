"""What the CLI and ``/api/keys`` both do: validate a new key's options and describe keys.

Errors are :class:`KeyInputError` with a message that says what is allowed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from codexlb.db.store import AmbiguousAccount
from codexlb.keys.limits import (
    METRICS,
    WINDOWS,
    Limit,
    LimitError,
    check_unique,
    limit_from_dict,
    parse_duration,
    window_bounds,
)
from codexlb.keys.store import ApiKey, Counts, KeyStore
from codexlb.keys.usage import metric_value

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
RESERVED_NAMES = frozenset({"usage"})
UPDATE_FIELDS = frozenset({"limits", "models", "accounts"})
FindAccount = Callable[[str], Awaitable[Any]]
"""``AccountStore.find``: an account (with ``id`` and ``label``) for an id, prefix, label or email, or None."""


class KeyInputError(ValueError):
    """A name, limit, model list, account or expiry that cannot be used."""


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name) or name.lower() in RESERVED_NAMES:
        raise KeyInputError(f"key name {name!r}: use 1-100 letters, digits and . _ @ + - (starting with a letter "
                            "or digit); 'usage' is reserved")
    return name


def parse_limits(values: Sequence[Any]) -> list[Limit]:
    try:
        return check_unique([limit_from_dict(value) for value in values])
    except LimitError as exc:
        raise KeyInputError(str(exc)) from None


def parse_names(value: Any, what: str) -> list[str] | None:
    """A comma-separated string or a list of non-empty strings; ``None`` stays ``None`` (no restriction)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise KeyInputError(f"{what}: expected a comma-separated string or a list of strings")
    names = [v.strip() for v in items if v.strip()]
    if not names:
        raise KeyInputError(f"{what}: give at least one name (leave it out to allow every one)")
    return names


async def resolve_accounts(refs: list[str] | None, find: FindAccount) -> list[str] | None:
    """Account ids for ids, id prefixes, labels or emails. :raises KeyInputError: unknown or ambiguous."""
    if refs is None:
        return None
    ids = []
    for ref in refs:
        try:
            account = await find(ref)
        except AmbiguousAccount as exc:
            raise KeyInputError(str(exc)) from None
        if account is None:
            raise KeyInputError(f"accounts: no account matches {ref!r} (see `codexlb accounts list`)")
        ids.append(account.id)
    return ids


def parse_expiry(value: Any, now: float | None = None) -> float | None:
    """``30d``/``12h``/``2w`` from now, or ``None`` (never expires)."""
    if value is None:
        return None
    try:
        return (time.time() if now is None else now) + parse_duration(str(value), "expires")
    except LimitError as exc:
        raise KeyInputError(str(exc)) from None


async def create_key(store: KeyStore, find: FindAccount, name: Any, *, limits: Sequence[Any] = (),
                     models: Any = None, accounts: Any = None, expires: Any = None) -> tuple[ApiKey, str]:
    """Validate everything, then store a new key; returns it and the key itself (to show once)."""
    name = check_name(name)
    parsed = parse_limits(list(limits))
    model_list = parse_names(models, "models")
    account_ids = await resolve_accounts(parse_names(accounts, "accounts"), find)
    expires_at = parse_expiry(expires)
    return await store.create(name, limits=parsed, models=model_list, accounts=account_ids, expires_at=expires_at)


async def update_key(store: KeyStore, find: FindAccount, name: str, changes: Mapping[str, Any]) -> ApiKey:
    """Change a key's ``limits``, ``models`` and/or ``accounts`` (the fields present in ``changes``).

    ``models``/``accounts`` ``None`` allow every model/account. Its usage so far in each window
    counts against new limits at once. :raises KeyInputError: :raises KeyNotFound:
    """
    unknown = set(changes) - UPDATE_FIELDS
    if unknown:
        raise KeyInputError(f"unknown field(s) {', '.join(sorted(unknown))} "
                            f"(allowed: {', '.join(sorted(UPDATE_FIELDS))})")
    key = await store.get(name)
    limits = list(key.limits)
    if "limits" in changes:
        if not isinstance(changes["limits"], list | tuple):
            raise KeyInputError("limits: expected a list such as [\"requests=500/day\"] ([] for none)")
        limits = parse_limits(list(changes["limits"]))
    models = parse_names(changes["models"], "models") if "models" in changes else key.models
    accounts = (await resolve_accounts(parse_names(changes["accounts"], "accounts"), find)
                if "accounts" in changes else key.accounts)
    return await store.update(key.id, limits=limits, models=models, accounts=accounts)


def window_usage(counts: Counts, resets_at: float) -> dict[str, Any]:
    """Requests and tokens (input, cached, output, total) of one window, and when it resets."""
    return {**{metric: metric_value(counts, metric) for metric in (*METRICS, "cached_tokens")},
            "resets_at": resets_at}


def key_summary(key: ApiKey, labels: dict[str, str] | None = None, counts: dict[str, Counts] | None = None,
                now: float | None = None) -> dict[str, Any]:
    """The public fields of a key (never the key or its hash).

    With ``counts`` (:meth:`KeyStore.current_counts`): ``windows``, the usage against each limit,
    and ``usage``, requests and tokens in each current window.
    """
    now = time.time() if now is None else now
    labels = labels or {}
    summary: dict[str, Any] = {
        "id": key.id, "name": key.name, "prefix": key.key_prefix, "state": key.state(now),
        "created_at": key.created_at, "expires_at": key.expires_at, "revoked_at": key.revoked_at,
        "rotated_at": key.rotated_at, "last_used_at": key.last_used_at,
        "limits": [limit.as_dict() for limit in key.limits],
        "models": list(key.models) if key.models is not None else None,
        "accounts": ([{"id": a, "label": labels.get(a)} for a in key.accounts]
                     if key.accounts is not None else None),
    }
    if counts is not None:
        bounds = {window: window_bounds(window, now) for window in WINDOWS}
        summary["windows"] = [{**limit.as_dict(), "used": metric_value(counts.get(limit.window, (0, 0, 0, 0)),
                                                                      limit.metric),
                               "resets_at": bounds[limit.window][1]} for limit in key.limits]
        summary["usage"] = {window: window_usage(counts.get(window, (0, 0, 0, 0)), bounds[window][1])
                            for window in WINDOWS}
    return summary
