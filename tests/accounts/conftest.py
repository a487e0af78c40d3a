"""Fixtures for the account tests: a fake auth server, settings pointed at it, a CLI runner in a thread.

CLI commands run in a worker thread (their own event loop, as in production) while the fake keeps
serving on the test's loop; the test plays the browser over real sockets.
"""

from __future__ import annotations

import asyncio
import io
import logging
import queue
import re
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from codexlb.accounts.storage import open_store
from codexlb.cli import build_parser
from codexlb.db.store import StoredAccount
from codexlb.settings import Settings
from codexlb.testing import harness
from codexlb.testing.fake_upstream import FakeAccount, FakeUpstream

PIPELINE = ("select_round_robin", "upstream")
URL_RE = re.compile(r"http://\S+/oauth/authorize\?\S+")


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(events=3, device_interval=0) as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, fake: FakeUpstream) -> Settings:
    return make_settings(tmp_path, fake)


def make_settings(tmp_path: Path, fake: FakeUpstream, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"oauth_callback_host": "127.0.0.1", "oauth_callback_port": 0,
                              "oauth_redirect_uri": "http://127.0.0.1:1455/auth/callback",
                              "oauth_timeout_seconds": 5.0, "token_refresh_timeout_seconds": 5.0}
    return harness.make_settings(tmp_path, fake=fake, **{**values, **overrides})


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="aiosqlite")


class ScriptedStdin(io.TextIOBase):
    """A stdin whose lines the test supplies while the command runs."""

    def __init__(self) -> None:
        self._lines: queue.Queue[str] = queue.Queue()

    def feed(self, text: str) -> None:
        self._lines.put(text)

    def readline(self, size: int = -1) -> str:  # noqa: ARG002 - TextIOBase signature
        return self._lines.get(timeout=30)

    def readable(self) -> bool:
        return True


class CliRun:
    """One ``codexlb`` command running in a thread; ``output`` is what it printed so far."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.out = self.err = ""
        self.future: asyncio.Future[int] | None = None
        self.done = threading.Event()

    def _collect(self) -> None:
        captured = self.capsys.readouterr()
        self.out += captured.out
        self.err += captured.err

    @property
    def output(self) -> str:
        self._collect()
        return self.out + self.err

    async def wait_for(self, pattern: re.Pattern[str] | str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the output matches ``pattern`` (polls; the command runs in another thread)."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        async with asyncio.timeout(timeout):
            while True:
                found = regex.search(self.output)
                if found:
                    return found
                assert self.future is not None
                if self.future.done():
                    raise AssertionError(f"command ended ({self.future.result()}) without {regex.pattern!r}:\n"
                                         f"{self.output}")
                await asyncio.sleep(0.01)

    async def result(self, timeout: float = 20.0) -> int:
        assert self.future is not None
        async with asyncio.timeout(timeout):
            code = await self.future
        self._collect()
        return code


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """``run = cli(settings, "accounts", "list", stdin=...)``; ``await run.result()`` is the exit status."""

    def start(settings: Settings, *argv: str, stdin: io.TextIOBase | None = None) -> CliRun:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", stdin)
        args = build_parser().parse_args(list(argv))
        run = CliRun(capsys)
        run.future = asyncio.ensure_future(asyncio.to_thread(args.func, args, settings))
        return run

    return start


def secrets_of(fake: FakeUpstream) -> list[str]:
    """Every token and authorization code the fake ever issued."""
    out: list[str] = list(fake.oauth.codes)
    for account in fake.accounts.values():
        out += [account.access_token, account.refresh_token, account.id_token,
                *account.old_access_tokens, *account.old_refresh_tokens]
    return [s for s in out if s]


def assert_no_secrets(fake: FakeUpstream, *texts: str, caplog: pytest.LogCaptureFixture | None = None) -> None:
    """No token or code of the fake appears in ``texts`` or the captured log records."""
    blob = "\n".join(texts)
    if caplog is not None:
        blob += "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    for secret in secrets_of(fake):
        assert secret not in blob, "a token or code leaked into output or logs"


@dataclass
class Page:
    status_code: int
    text: str
    headers: dict[str, str]


async def get(url: str) -> Page:
    """A browser GET without following redirects (aiohttp: it logs no URLs, so codes stay out of caplog)."""
    async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False) as response:
        return Page(response.status, await response.text(), dict(response.headers))


async def authorize(url: str) -> str:
    """Open the authorize URL; the ``Location`` it redirects to."""
    page = await get(url)
    assert page.status_code == 302, page.text
    return page.headers["Location"]


async def browser(url: str) -> tuple[str, Page]:
    """Play the browser: open the authorize URL and follow its redirect to the callback by hand."""
    location = await authorize(url)
    return location, await get(location)


async def stored(settings: Settings) -> list[StoredAccount]:
    async with open_store(settings) as store:
        return await store.list()


async def add_accounts(settings: Settings, accounts: Iterable[FakeAccount], **kwargs: Any) -> list[StoredAccount]:
    """Store fake accounts directly (as an import would)."""
    rows = []
    async with open_store(settings) as store:
        for account in accounts:
            row, _ = await store.upsert(chatgpt_account_id=account.chatgpt_account_id, email=account.email,
                                        plan_type=account.plan_type, access_token=account.access_token,
                                        refresh_token=account.refresh_token, id_token=account.id_token, **kwargs)
            rows.append(row)
    return rows
