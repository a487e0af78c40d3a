"""The local listener the browser is redirected to after login (aiohttp, one path)."""

from __future__ import annotations

import errno
import html
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from codexlb.accounts.oauth import LoginError

log = logging.getLogger("codexlb.accounts")

Handler = Callable[[dict[str, str]], Awaitable[tuple[bool, str]]]
"""Gets the callback query; returns ``(ok, message)`` for the page shown in the browser."""

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>codexlb login</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;color:#222}}
h1{{color:{color}}}</style></head><body><h1>{title}</h1><p>{message}</p></body></html>
"""


def page(ok: bool, message: str) -> str:
    """The small HTML page shown after a callback."""
    title = "Login complete" if ok else "Login failed"
    return PAGE.format(color="#1a7f37" if ok else "#b42318", title=title, message=html.escape(message))


class CallbackServer:
    """Serves ``path`` on ``host:port`` and passes each hit's query to ``handler``."""

    def __init__(self, host: str, port: int, path: str, handler: Handler) -> None:
        self.host, self.port, self.path = host, port, path or "/"
        self._handler = handler
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port. A busy port raises :class:`LoginError` (``port_in_use``)."""
        app = web.Application()
        app.router.add_get(self.path, self._callback)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise LoginError(
                    f"cannot listen for the login callback on {self.host}:{self.port}: the port is already in "
                    "use (another login or a Codex CLI login running?). Finish or stop that one, or use "
                    "`codexlb accounts login --device` (device code) or `--manual` (paste the callback URL).",
                    "port_in_use") from None
            raise LoginError(f"cannot listen for the login callback on {self.host}:{self.port}: {exc.strerror}; "
                             "use `codexlb accounts login --device` or `--manual`.", "port_in_use") from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.debug("login callback listening on %s:%s%s", self.host, self.port, self.path)
        return self.port

    async def stop(self) -> None:
        """Stop listening (answers in flight are finished first)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def _callback(self, request: web.Request) -> web.Response:
        ok, message = await self._handler(dict(request.query))
        return web.Response(text=page(ok, message), status=200 if ok else 400, content_type="text/html",
                            headers={"cache-control": "no-store"})
