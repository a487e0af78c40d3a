"""The ASGI application, for running codexlb under an ASGI server's own command line::

    hypercorn --config deploy/hypercorn.toml codexlb.asgi:app

Importing this module loads and validates the settings (environment, ``.env``, ``.env.local``
and ``settings.toml`` in the working directory), sets up logging and runs the start-up checks of
``codexlb serve`` (the bind safety check included); a problem is printed and the process exits
with status 2. Migrations, plugins and background jobs start in the ASGI lifespan, as under
``codexlb serve``. The server's bind must match ``CODEX_LB_HOST``/``CODEX_LB_PORT``: the bind
safety check judges ``CODEX_LB_HOST``.
"""

from __future__ import annotations

import sys

from quart import Quart

from codexlb.app import create_app
from codexlb.errors import ConfigError, PluginError
from codexlb.logs import configure_logging
from codexlb.settings import load_settings

__all__ = ["app", "load_app"]


def load_app() -> Quart:
    """Settings, logging and start-up checks, then the app; exit status 2 on a problem."""
    try:
        settings = load_settings()
        configure_logging(settings)
        return create_app(settings)
    except (ConfigError, PluginError) as exc:
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        print("codexlb: cannot start:", *(f"  {p}" for p in problems), sep="\n", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


app = load_app()
