"""``codexlb accounts``: login (browser, ``--manual``, ``--device``), import, export, list, pause, resume, remove.

Commands open the database themselves; a running server reads account changes from it every few
seconds (see :data:`DESCRIPTION`, shown by ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import webbrowser
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from codexlb.accounts.authjson import (
    AuthBatchError,
    AuthFileError,
    build_auth_json,
    check_batch,
    dump_auth_json,
    import_auth,
    load_auth_file,
    write_auth_json,
)
from codexlb.accounts.device import poll_device, start_device
from codexlb.accounts.login import LoginSession, describe, save_login
from codexlb.accounts.oauth import LoginError
from codexlb.accounts.storage import open_store
from codexlb.accounts.views import account_summary, table
from codexlb.db.store import AmbiguousAccount
from codexlb.types import AccountStatus

if TYPE_CHECKING:
    from codexlb.db.store import AccountStore, StoredAccount
    from codexlb.settings import Settings

SHARED_LOGIN_NOTE = ("note: refresh tokens are single-use: once Codex refreshes this login, codexlb's copy is refused "
                     "(the account then needs `codexlb accounts login`), and the other way round")
RUNNING_SERVER_NOTE = "(a running codexlb server picks this up within about 5 seconds)"
DESCRIPTION = ("Manage the pooled ChatGPT accounts: login (browser, --manual or --device), import, export, list, "
               "pause, resume, remove. Commands write to the database directly; a running server picks the "
               "changes up within about 5 seconds (the HTTP API under /api/accounts changes it at once).")


class CommandFailed(Exception):
    """Print the message and exit with status 1."""


def register(subparsers: Any) -> None:
    """Add ``accounts ...`` to the main parser."""
    parser = subparsers.add_parser("accounts", help="pooled accounts: login, import, export, list, pause, "
                                   "resume, remove", description=DESCRIPTION)
    cmds = parser.add_subparsers(dest="accounts_command", metavar="COMMAND", required=True)

    login = cmds.add_parser("login", help="add (or re-login) a ChatGPT account with OAuth")
    mode = login.add_mutually_exclusive_group()
    mode.add_argument("--manual", action="store_true",
                      help="no callback listener: paste the URL the browser ends on (remote servers)")
    mode.add_argument("--device", action="store_true", help="device-code login: enter a code on another device")
    login.add_argument("--label", help="name shown in lists (default: acct- and a short hash of the account id)")
    login.add_argument("--timeout", type=float, help="seconds to wait for the browser (CODEX_LB_OAUTH_TIMEOUT_SECONDS)")
    login.add_argument("--no-browser", action="store_true", help="only print the URL")
    login.set_defaults(func=_command(_login))

    imp = cmds.add_parser("import", help="import Codex auth.json files (a folder means FOLDER/auth.json)")
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--label", help="label (only with one file)")
    imp.set_defaults(func=_command(_import))

    exp = cmds.add_parser("export", help="write an auth.json Codex can use (it contains the tokens)")
    exp.add_argument("account", metavar="ID", help="id, id prefix, label or email")
    exp.add_argument("--output", "-o", help="file to write (mode 0600, missing folders are created); "
                     "default: stdout")
    exp.add_argument("--force", "-f", action="store_true", help="overwrite an existing --output file")
    exp.set_defaults(func=_command(_export))

    lst = cmds.add_parser("list", help="accounts with status, usage and last use")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=_command(_list))

    for name, text in (("pause", "take an account out of routing"), ("resume", "route to a paused account again")):
        cmd = cmds.add_parser(name, help=text)
        cmd.add_argument("account", metavar="ID", help="id, id prefix, label or email")
        cmd.set_defaults(func=_command(_pause if name == "pause" else _resume))

    register_set(cmds)

    rm = cmds.add_parser("remove", help="delete an account and its tokens")
    rm.add_argument("account", metavar="ID", help="id, id prefix, label or email")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(func=_command(_remove))


def _command(fn: Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]) -> Callable[..., int]:
    """A sync handler running ``fn``; expected failures print one line and exit 1."""

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return asyncio.run(fn(args, settings))
        except (CommandFailed, LoginError, AuthFileError, AmbiguousAccount) as exc:
            return _fail(args, str(exc))
        except SQLAlchemyError as exc:
            return _fail(args, f"database error: {type(exc).__name__}: {str(getattr(exc, 'orig', '') or '')[:200]}")

    handler.__name__ = fn.__name__
    return handler


def _fail(args: argparse.Namespace, message: str) -> int:
    print(f"codexlb accounts {args.accounts_command}: {message}", file=sys.stderr)
    return 1


def _out(text: str = "") -> None:
    print(text, flush=True)


async def _find(store: AccountStore, ref: str) -> StoredAccount:
    account = await store.find(ref)
    if account is None:
        raise CommandFailed(f"no account matches {ref!r}; see `codexlb accounts list`")
    return account


# -- login ----------------------------------------------------------------------------------------------


def _can_open_browser(args: argparse.Namespace) -> bool:
    if args.no_browser or not sys.stdout.isatty():
        return False
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return has_display or sys.platform in ("darwin", "win32")


async def _login(args: argparse.Namespace, settings: Settings) -> int:
    timeout = args.timeout or settings.oauth_timeout_seconds
    async with open_store(settings) as store:
        if args.device:
            return await _login_device(args, settings, store)
        session = LoginSession(settings, store, label=args.label)
        try:
            if not args.manual:
                await session.listen()
            _out(f"Open this URL in a browser and sign in with the ChatGPT account to add:\n\n  {session.url}\n")
            if args.manual:
                _out(f"Your browser then ends on {session.redirect_uri}?code=... (the page may not load: that is "
                     "fine). Copy that whole URL from the address bar and paste it here:")
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line.strip():
                    raise LoginError("no callback URL was pasted; nothing was stored.", "bad_callback")
                account = await session.complete(line)
            else:
                if _can_open_browser(args):
                    await asyncio.to_thread(webbrowser.open, session.url)
                _out(f"Waiting up to {timeout:g} s for the browser to return to {session.redirect_uri} ...")
                account = await session.wait(timeout)
        finally:
            await session.close()
    _report(account, session.created)
    return 0


def _report(account: StoredAccount, created: bool) -> None:
    _out(f"codexlb: {describe(account, created)}")
    if not account.refresh_token:
        print("codexlb accounts login: warning: the auth server sent no refresh token, so this account stops "
              "working when its access token expires; add offline_access to CODEX_LB_OAUTH_SCOPE and log in "
              "again", file=sys.stderr)


async def _login_device(args: argparse.Namespace, settings: Settings, store: AccountStore) -> int:
    device = await start_device(settings)
    minutes = max(1, round((device.expires_at - time.time()) / 60))
    _out(f"Open {device.verification_url} on any device, sign in, and enter the code\n\n  {device.user_code}\n\n"
         f"(it expires in about {minutes} min). Waiting for approval ...")
    tokens = await poll_device(settings, device)
    account, created = await save_login(store, tokens, label=args.label)
    _report(account, created)
    return 0


# -- import / export ------------------------------------------------------------------------------------


async def _import(args: argparse.Namespace, settings: Settings) -> int:
    if args.label and len(args.paths) > 1:
        raise CommandFailed("--label needs exactly one PATH")
    paths = [Path(raw).expanduser() for raw in args.paths]
    paths = [path / "auth.json" if path.is_dir() else path for path in paths]
    try:
        parsed = check_batch((str(path), partial(load_auth_file, path)) for path in paths)
    except AuthBatchError as exc:
        for problem in exc.problems:
            print(f"codexlb accounts import: {problem}", file=sys.stderr)
        raise CommandFailed(f"{len(exc.problems)} of {len(paths)} file(s) invalid; nothing was imported") from None
    async with open_store(settings) as store:
        for path, auth in zip(paths, parsed, strict=True):
            account, created = await import_auth(store, auth, label=args.label)
            _out(f"{path}: {describe(account, created)}")
    return 0


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    async with open_store(settings) as store:
        account = await _find(store, args.account)
    data = build_auth_json(account)
    print(SHARED_LOGIN_NOTE, file=sys.stderr)
    if not args.output:
        sys.stdout.write(dump_auth_json(data))
        return 0
    target = Path(args.output).expanduser()
    try:
        write_auth_json(target, data, overwrite=args.force)
    except FileExistsError:
        raise CommandFailed(f"{target} exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CommandFailed(f"cannot write {target}: {exc.strerror or exc}") from None
    print(f"wrote auth.json of account {account.label} to {target} (mode 0600)", file=sys.stderr)
    return 0


# -- admin ----------------------------------------------------------------------------------------------


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_store(settings) as store:
        accounts = await store.list()
        pinned = await _pinned_counts(store)
    if args.json:
        _out(json.dumps([account_summary(a) | _routing_fields(a, pinned) for a in accounts], indent=2))
    elif not accounts:
        _out("no accounts yet; add one with `codexlb accounts login` or "
             "`codexlb accounts import ~/.codex/auth.json`")
    else:
        _out(_with_routing_columns(table(accounts), accounts, pinned))
    return 0


# -- caps -------------------------------------------------------------------------------------------------

PINNED_SECONDS = 3600.0
"""A conversation counts as pinned to the account its newest turn of the last hour went to."""


def register_set(cmds: Any) -> None:
    """``accounts set LABEL --max-primary N --max-secondary N``."""
    cmd = cmds.add_parser("set", help="set an account's usage caps (percent of its 5h / weekly window)")
    cmd.add_argument("account", metavar="ID", help="id, id prefix, label or email")
    cmd.add_argument("--max-primary", type=_cap, metavar="PERCENT", default=argparse.SUPPRESS,
                     help="stop routing to it at this share of its 5h window (1-100, or 'none')")
    cmd.add_argument("--max-secondary", type=_cap, metavar="PERCENT", default=argparse.SUPPRESS,
                     help="stop routing to it at this share of its weekly window (1-100, or 'none')")
    cmd.set_defaults(func=_command(_set))


def _cap(text: str) -> float | None:
    if text.strip().lower() in ("none", "off", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 100:  # also NaN
        raise argparse.ArgumentTypeError(f"expected a percentage above 0 and at most 100, or 'none'; got {text!r}")
    return value


async def _set(args: argparse.Namespace, settings: Settings) -> int:
    values = {name: getattr(args, arg) for name, arg in (("max_primary_percent", "max_primary"),
                                                         ("max_secondary_percent", "max_secondary"))
              if hasattr(args, arg)}
    if not values:
        raise CommandFailed("nothing to set: give --max-primary and/or --max-secondary")
    async with open_store(settings) as store:
        account = await _find(store, args.account)
        await store.update(account.id, **values)
    caps = ", ".join(f"{k.split('_')[1]} cap {'none' if v is None else f'{v:g}%'}" for k, v in values.items())
    _out(f"account {account.label}: {caps} (running servers pick this up within seconds)")
    return 0


async def _pinned_counts(store: AccountStore) -> dict[str, int]:
    """Conversations per account, from the request log (empty when it cannot be read)."""
    try:
        return await store.pinned_conversations(since=time.time() - PINNED_SECONDS)
    except SQLAlchemyError:
        return {}


def _headroom(account: StoredAccount) -> float:
    """Percent left before the tighter of the account's caps (100 without caps) or a full window."""
    now, left = time.time(), 100.0
    for cap, window in ((account.max_primary_percent, account.primary),
                        (account.max_secondary_percent, account.secondary)):
        used = 0.0 if window.resets_at is not None and window.resets_at <= now else window.used_percent
        left = min(left, max(0.0, (cap if cap is not None else 100.0) - used))
    return left


def _routing_fields(account: StoredAccount, pinned: dict[str, int]) -> dict[str, Any]:
    return {"headroom_percent": round(_headroom(account), 2), "pinned_conversations": pinned.get(account.id, 0)}


def _with_routing_columns(text: str, accounts: list[StoredAccount], pinned: dict[str, int]) -> str:
    """``table`` plus CAPS (5h/weekly), HEADROOM and PINNED columns."""
    def caps(a: StoredAccount) -> str:
        if a.max_primary_percent is None and a.max_secondary_percent is None:
            return "-"
        return "/".join("-" if c is None else f"{c:g}%" for c in (a.max_primary_percent, a.max_secondary_percent))

    cells = [("CAPS 5H/WK", "HEADROOM", "PINNED")] + [
        (caps(a), f"{_headroom(a):.0f}%", str(pinned.get(a.id, 0))) for a in accounts]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    lines = text.splitlines()
    width = max(len(line) for line in lines)
    return "\n".join(line.ljust(width) + "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for line, row in zip(lines, cells, strict=True))


async def _pause(args: argparse.Namespace, settings: Settings) -> int:
    async with open_store(settings) as store:
        account = await _find(store, args.account)
        await store.update(account.id, status=AccountStatus.PAUSED.value, status_reason=None)
    _out(f"paused account {account.label} {RUNNING_SERVER_NOTE}")
    return 0


async def _resume(args: argparse.Namespace, settings: Settings) -> int:
    async with open_store(settings) as store:
        account = await _find(store, args.account)
        if account.status is AccountStatus.REAUTH_REQUIRED:
            raise CommandFailed(f"account {account.label} needs a new login ({account.status_reason}); "
                                "run `codexlb accounts login` with that ChatGPT account")
        await store.update(account.id, status=AccountStatus.ACTIVE.value, status_reason=None)
    _out(f"resumed account {account.label} {RUNNING_SERVER_NOTE}")
    return 0


def _confirm(prompt: str) -> bool:
    print(prompt, end="", flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


async def _remove(args: argparse.Namespace, settings: Settings) -> int:
    async with open_store(settings) as store:
        account = await _find(store, args.account)
        email = f" <{account.email}>" if account.email and account.email != account.label else ""
        prompt = f"Remove account {account.label}{email} (id {account.id[:8]}) and its tokens? [y/N] "
        if not args.yes and not await asyncio.to_thread(_confirm, prompt):
            raise CommandFailed("not removed (confirm with y, or pass --yes)")
        await store.delete(account.id)
    _out(f"removed account {account.label} {RUNNING_SERVER_NOTE}")
    return 0
