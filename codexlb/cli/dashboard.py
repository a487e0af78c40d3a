"""``codexlb dashboard``: the web dashboard's password and optional TOTP second factor.

``set-password`` reads the password from standard input when it is not a terminal (first line),
else prompts twice; it stores an argon2 hash and signs every admin out. ``totp enable`` makes a
secret, prints it as a QR code (and an ``otpauth://`` link) for an authenticator app, and asks for
a code to confirm when run in a terminal; ``totp disable`` turns it off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from codexlb.errors import CodexLBError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from codexlb.db.crypto import TokenCipher
    from codexlb.settings import Settings

ISSUER = "codexlb"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dashboard", help="web dashboard: set the password, TOTP",
                                   description="Set the web dashboard's password and its optional TOTP "
                                   "second factor. Without a password the dashboard answers only on this machine.")
    commands = parser.add_subparsers(dest="dashboard_command", metavar="COMMAND", required=True)
    commands.add_parser("set-password", help="set the password (stdin or a prompt); signs every admin out",
                        description="Read the password from standard input (its first line) or, in a "
                        "terminal, a prompt; store its argon2 hash; sign every admin out.").set_defaults(
        func=set_password)
    totp = commands.add_parser("totp", help="TOTP second factor: enable or disable",
                               description="Enable or disable a TOTP code as a second sign-in factor.")
    totp_commands = totp.add_subparsers(dest="totp_command", metavar="COMMAND", required=True)
    totp_commands.add_parser("enable", help="make a secret, show its QR code; confirm with a code in a terminal",
                             description="Make a new TOTP secret and show it as a QR code for an "
                             "authenticator app.").set_defaults(func=totp_enable)
    totp_commands.add_parser("disable", help="sign in with the password alone",
                             description="Turn the TOTP second factor off.").set_defaults(func=totp_disable)


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], TokenCipher]]:
    from codexlb.db.crypto import load_cipher
    from codexlb.db.engine import make_engine, make_sessionmaker
    from codexlb.db.migrate import prepare_database

    settings.ensure_dirs()
    engine = make_engine(settings, poolclass=NullPool)
    try:
        await prepare_database(settings, engine)
        yield make_sessionmaker(engine), await load_cipher(settings, engine)
    finally:
        await engine.dispose()


def _fail(command: str, message: str) -> int:
    print(f"codexlb dashboard {command}: {message}", file=sys.stderr)
    return 1


def _store(command: str, settings: Settings, write: Any) -> int | None:
    """Run ``write(sessionmaker, cipher)`` on the opened database; the exit status on failure, else ``None``."""

    async def run() -> None:
        async with _database(settings) as (sessionmaker, cipher):
            await write(sessionmaker, cipher)

    try:
        asyncio.run(run())
    except (CodexLBError, SQLAlchemyError, OSError) as exc:
        return _fail(command, str(exc))
    return None


def _read_password() -> str | None:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("New dashboard password: ")
    if getpass.getpass("Repeat it: ") != first:
        return None
    return first


def set_password(args: argparse.Namespace, settings: Settings) -> int:
    from codexlb.db.dashboard_auth import check_password_text
    from codexlb.db.dashboard_auth import set_password as store_password

    password = _read_password()
    if password is None:
        return _fail("set-password", "the two passwords differ; nothing was changed")
    problem = check_password_text(password)
    if problem:
        return _fail("set-password", f"{problem}; nothing was changed")

    failed = _store("set-password", settings, lambda sessionmaker, _: store_password(sessionmaker, password))
    if failed is not None:
        return failed
    print("Dashboard password set; every admin session was signed out. Sign in at "
          f"http://{settings.host}:{settings.port}/dashboard/")
    return 0


def totp_enable(args: argparse.Namespace, settings: Settings) -> int:
    import pyotp
    import segno

    from codexlb.db.dashboard_auth import set_totp_secret

    secret = pyotp.random_base32()
    uri = pyotp.TOTP(secret).provisioning_uri(name="dashboard", issuer_name=ISSUER)
    qr = segno.make(uri, error="m")
    qr.terminal(out=sys.stdout, compact=True)
    print(f"Scan the QR code with an authenticator app, or add this link:\n{uri}")
    if sys.stdin.isatty():
        code = input("Enter the app's current code to confirm: ").strip().replace(" ", "")
        if not pyotp.TOTP(secret).verify(code, valid_window=1):
            return _fail("totp enable", "that code does not match; TOTP stays as it was")

    failed = _store("totp enable", settings, lambda sessionmaker, cipher: set_totp_secret(sessionmaker, cipher, secret))
    if failed is not None:
        return failed
    print("TOTP enabled: signing in to the dashboard now asks for a code.")
    return 0


def totp_disable(args: argparse.Namespace, settings: Settings) -> int:
    from codexlb.db.dashboard_auth import set_totp_secret

    failed = _store("totp disable", settings, lambda sessionmaker, cipher: set_totp_secret(sessionmaker, cipher, None))
    if failed is not None:
        return failed
    print("TOTP disabled: the dashboard asks for the password alone.")
    return 0
