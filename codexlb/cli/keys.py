"""``codexlb keys``: create, list, show, set (limits and scope), revoke, rotate and usage of client API keys.

Commands open the database themselves; a running server picks changes up within its sync
interval (``[plugins.api_keys] sync_interval_seconds``). ``create`` and ``rotate`` print the key
once: it is never stored, only its hash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from codexlb.accounts.views import ago
from codexlb.keys.limits import LimitError, parse_duration
from codexlb.keys.report import usage_by_key
from codexlb.keys.service import KeyInputError, create_key, key_summary, update_key
from codexlb.keys.store import KeyExists, KeyNotFound, KeyStore

if TYPE_CHECKING:
    from codexlb.db.store import AccountStore
    from codexlb.settings import Settings

SERVER_NOTE = "(a running codexlb server sees this within a few seconds)"


def register(subparsers: Any) -> None:
    """Add ``keys ...`` to the main parser."""
    parser = subparsers.add_parser("keys", help="client API keys: create, list, show, set, revoke, rotate, usage",
                                   description="Create, list, show, change, revoke, rotate client API keys and show "
                                   "their usage. Commands open the database themselves; a running server picks changes "
                                   "up within its sync interval ([plugins.api_keys] sync_interval_seconds). create "
                                   "and rotate print the key once: it is never stored, only its hash.")
    cmds = parser.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)

    create = cmds.add_parser("create", help="make a key (printed once)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--expires", metavar="DURATION", help="lifetime such as 30d, 12h or 2w (default: never)")
    create.add_argument("--limit", action="append", default=[], metavar="METRIC=N/WINDOW",
                        help="e.g. requests=500/day, tokens=2000000/5h, input_tokens=..., output_tokens=...; "
                        "windows: 5h, day, week, month (repeatable)")
    create.add_argument("--models", metavar="M1,M2", help="models the key may use (default: any)")
    create.add_argument("--accounts", metavar="A1,A2", help="accounts (label, email or id) the key may use "
                        "(default: any)")
    create.add_argument("--json", action="store_true", help="one JSON object with the key in 'key'")
    create.set_defaults(func=_command(_create))

    lst = cmds.add_parser("list", help="keys with state, limits and last use (never the key)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_command(_list))

    show = cmds.add_parser("show", help="one key with its usage in each window and against each limit")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_command(_show))

    change = cmds.add_parser("set", help="change a key's limits, models or accounts (its usage so far counts)")
    change.add_argument("name", metavar="NAME")
    limits = change.add_mutually_exclusive_group()
    limits.add_argument("--limit", action="append", metavar="METRIC=N/WINDOW",
                        help="the key's limits from now on, replacing all it had (repeatable)")
    limits.add_argument("--no-limits", action="store_true", help="remove every limit")
    models = change.add_mutually_exclusive_group()
    models.add_argument("--models", metavar="M1,M2", help="the models the key may use")
    models.add_argument("--any-model", action="store_true", help="allow every model")
    scope = change.add_mutually_exclusive_group()
    scope.add_argument("--accounts", metavar="A1,A2", help="the accounts (label, email or id) the key may use")
    scope.add_argument("--any-account", action="store_true", help="allow every account")
    change.add_argument("--json", action="store_true")
    change.set_defaults(func=_command(_set))

    revoke = cmds.add_parser("revoke", help="stop a key from working (it stays listed)")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(func=_command(_revoke))

    rotate = cmds.add_parser("rotate", help="replace a key's secret (printed once); limits and usage stay")
    rotate.add_argument("name", metavar="NAME")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(func=_command(_rotate))

    usage = cmds.add_parser("usage", help="requests, tokens, cached share and errors per key and account")
    usage.add_argument("name", metavar="NAME", nargs="?")
    usage.add_argument("--since", default="7d", metavar="DURATION", help="how far back (default 7d)")
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(func=_command(_usage))


class CommandFailed(Exception):
    """Print the message and exit with status 1."""


def _command(fn: Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]) -> Callable[..., int]:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return asyncio.run(fn(args, settings))
        except (CommandFailed, KeyInputError, KeyExists, KeyNotFound, LimitError) as exc:
            message = exc.args[0] if exc.args else str(exc)
        except SQLAlchemyError as exc:
            message = f"database error: {type(exc).__name__}: {str(getattr(exc, 'orig', '') or '')[:200]}"
        print(f"codexlb keys {args.keys_command}: {message}", file=sys.stderr)
        return 1

    handler.__name__ = fn.__name__
    return handler


@contextlib.asynccontextmanager
async def open_stores(settings: Settings) -> AsyncIterator[tuple[KeyStore, AccountStore]]:
    """The key store and the account store of a migrated database; the engine is closed after."""
    from codexlb.db.crypto import load_cipher
    from codexlb.db.engine import make_engine, make_sessionmaker
    from codexlb.db.migrate import prepare_database
    from codexlb.db.store import AccountStore

    settings.ensure_dirs()
    engine = make_engine(settings, poolclass=NullPool)
    try:
        await prepare_database(settings, engine)
        sessionmaker = make_sessionmaker(engine)
        yield KeyStore(sessionmaker), AccountStore(sessionmaker, await load_cipher(settings, engine))
    finally:
        await engine.dispose()


def _out(text: str = "") -> None:
    print(text, flush=True)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else "-"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    rows = [header, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


async def _labels(accounts: AccountStore) -> dict[str, str]:
    return {a.id: a.label for a in await accounts.list()}


def _print_secret(summary: dict[str, Any], secret: str, args: argparse.Namespace, verb: str) -> None:
    if args.json:
        _out(json.dumps({**summary, "key": secret}, indent=2))
        return
    _out(f"API key {summary['name']!r} {verb}. Copy it now, it is not shown again:\n\n  {secret}\n")
    _out("Clients send it as 'Authorization: Bearer <key>' (Codex CLI: env_key; OpenAI SDK: api_key).")


async def _create(args: argparse.Namespace, settings: Settings) -> int:
    async with open_stores(settings) as (keys, accounts):
        key, secret = await create_key(keys, accounts.find, args.name, limits=args.limit, models=args.models,
                                       accounts=args.accounts, expires=args.expires)
        summary = key_summary(key, await _labels(accounts))
    _print_secret(summary, secret, args, "created")
    return 0


def _describe(summary: dict[str, Any]) -> tuple[str, ...]:
    now = time.time()
    limits = ", ".join(f"{x['metric']}={x['max']}/{x['window']}" for x in summary["limits"]) or "-"
    models = ",".join(summary["models"]) if summary["models"] is not None else "any"
    accounts = ",".join(a["label"] or a["id"][:8] for a in summary["accounts"]) if summary["accounts"] else "any"
    return (summary["name"], summary["prefix"] + "...", summary["state"], limits, models, accounts,
            _when(summary["expires_at"]), ago(summary["last_used_at"], now))


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_stores(settings) as (keys, accounts):
        labels = await _labels(accounts)
        summaries = [key_summary(k, labels) for k in await keys.list()]
    if args.json:
        _out(json.dumps(summaries, indent=2))
    elif not summaries:
        _out("no API keys yet; make one with `codexlb keys create NAME`")
    else:
        _out(_table(("NAME", "KEY", "STATE", "LIMITS", "MODELS", "ACCOUNTS", "EXPIRES", "LAST USED"),
                    [_describe(s) for s in summaries]))
    return 0


async def _show(args: argparse.Namespace, settings: Settings) -> int:
    async with open_stores(settings) as (keys, accounts):
        key = await keys.get(args.name)
        summary = key_summary(key, await _labels(accounts), await keys.current_counts(key.id))
    if args.json:
        _out(json.dumps(summary, indent=2))
        return 0
    name, prefix, state, limits, models, accounts_text, expires, last = _describe(summary)
    for label, value in (("name", name), ("key", prefix), ("id", summary["id"]), ("state", state),
                         ("created", _when(summary["created_at"])), ("expires", expires),
                         ("last used", last), ("models", models), ("accounts", accounts_text), ("limits", limits)):
        _out(f"{label + ':':11}{value}")
    for window in summary["windows"]:
        _out(f"  {window['metric']} per {window['window']}: {window['used']} of {window['max']} "
             f"(resets {_when(window['resets_at'])})")
    _out("usage:")
    for window, used in summary["usage"].items():
        _out(f"  this {window}: {used['requests']} requests, {used['input_tokens']} input tokens "
             f"({used['cached_tokens']} cached), {used['output_tokens']} output tokens "
             f"(resets {_when(used['resets_at'])})")
    return 0


async def _set(args: argparse.Namespace, settings: Settings) -> int:
    changes: dict[str, Any] = {}
    if args.limit or args.no_limits:
        changes["limits"] = args.limit or []
    if args.models or args.any_model:
        changes["models"] = args.models or None
    if args.accounts or args.any_account:
        changes["accounts"] = args.accounts or None
    if not changes:
        raise CommandFailed("nothing to change: give --limit, --no-limits, --models, --any-model, --accounts "
                            "or --any-account")
    async with open_stores(settings) as (keys, accounts):
        key = await update_key(keys, accounts.find, args.name, changes)
        summary = key_summary(key, await _labels(accounts), await keys.current_counts(key.id))
    if args.json:
        _out(json.dumps(summary, indent=2))
    else:
        _, _, _, limits, models, accounts_text, _, _ = _describe(summary)
        _out(f"API key {key.name!r}: limits {limits}; models {models}; accounts {accounts_text} {SERVER_NOTE}")
    return 0


async def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    async with open_stores(settings) as (keys, _accounts):
        key = await keys.revoke(args.name)
    _out(f"revoked API key {key.name!r} {SERVER_NOTE}")
    return 0


async def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    async with open_stores(settings) as (keys, accounts):
        key, secret = await keys.rotate(args.name)
        summary = key_summary(key, await _labels(accounts))
    _print_secret(summary, secret, args, "rotated (the old key no longer works)")
    return 0


async def _usage(args: argparse.Namespace, settings: Settings) -> int:
    since = time.time() - parse_duration(args.since, "--since")
    async with open_stores(settings) as (keys, _accounts):
        key_id = (await keys.get(args.name)).id if args.name else None
        rows = await usage_by_key(keys.sessionmaker, since=since, key_id=key_id)
    if args.json:
        _out(json.dumps({"since": since, "data": rows}, indent=2))
    elif not rows:
        _out(f"no requests logged since {_when(since)}")
    else:
        now = time.time()
        _out(_table(("KEY", "ACCOUNT", "REQUESTS", "INPUT", "CACHED", "OUTPUT", "ERRORS", "LAST USED"), [
            (r["key"] or "(no key)", r["account"] or (r["account_id"] or "-")[:8], str(r["requests"]),
             str(r["input_tokens"]), f"{r['cached_tokens']} ({r['cached_share']:.0%})", str(r["output_tokens"]),
             str(r["errors"]), ago(r["last_used_at"], now)) for r in rows]))
    return 0
