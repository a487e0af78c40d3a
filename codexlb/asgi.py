"""The ASGI application, for running codexlb under an ASGI server's own command line::

    hypercorn --config deploy/hypercorn.toml codexlb.asgi:app

Importing this module loads and validates the settings (environment, ``.env``, ``.env.local``
and ``settings.toml`` in the working directory), sets up logging and builds the app; a problem is
printed and the process exits with status 2. The app starts in the ASGI lifespan exactly as under
``codexlb serve`` (:meth:`codexlb.app.CodexLB.start`: the bind safety check, migrations, plugins,
background jobs). A refusal there (an unsafe bind, a bad plugin) is one line and exit status 2; an
unreachable database or a failed migration is one line and exit status 1. The server's bind must
match ``CODEX_LB_HOST``/``CODEX_LB_PORT``: the bind safety check judges ``CODEX_LB_HOST``.

The server owns the shutdown here, so the app watches for it
(:class:`~codexlb.websocket.shutdown.ShutdownWatch`): on SIGTERM open WebSockets take no new turns,
finish the running one and close with 1001, as under ``codexlb serve``.
"""

from __future__ import annotations

import asyncio
import sys

from quart import Quart

from codexlb import hypercorn_eof
from codexlb.app import create_app, lb_of, settle_heap
from codexlb.errors import ConfigError, PluginError
from codexlb.logs import configure_logging
from codexlb.settings import load_settings
from codexlb.websocket.shutdown import ShutdownWatch

__all__ = ["app", "load_app"]


def _refuse(problems: list[str], status: int) -> SystemExit:
    print("codexlb: cannot start:", *(f"  {p}" for p in problems), sep="\n", file=sys.stderr, flush=True)
    return SystemExit(status)


def load_app() -> Quart:
    """Settings, logging and the app, whose start exits the process on a problem (status 2 or 1)."""
    hypercorn_eof.install()
    try:
        settings = load_settings()
        configure_logging(settings)
        quart = create_app(settings)
    except (ConfigError, PluginError) as exc:
        raise _refuse(exc.problems if isinstance(exc, ConfigError) else [str(exc)], 2) from None
    watch = ShutdownWatch(lb_of(quart).websockets.drain)

    @quart.before_serving
    async def start() -> None:
        """Start before the app's lifespan does (that start is then a no-op), ending the process on a
        refusal: an ASGI server would log a traceback and go on, or exit 1, without this."""
        from codexlb.db.migrate import DatabaseUnavailable, MigrationFailed

        try:
            await lb_of(quart).start()
        except (ConfigError, PluginError) as exc:
            raise _refuse(exc.problems if isinstance(exc, ConfigError) else [str(exc)], 2) from None
        except (MigrationFailed, DatabaseUnavailable) as exc:
            raise _refuse([str(exc)], 1) from None
        watch.install(asyncio.get_running_loop())
        settle_heap()

    @quart.after_serving
    async def stop() -> None:
        watch.uninstall()

    return quart


app = load_app()
