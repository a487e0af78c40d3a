"""``codexlb serve`` and ``codexlb fake-upstream``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

from codexlb.errors import ConfigError
from codexlb.settings import PREFIX, Settings

log = logging.getLogger("codexlb.serve")


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the proxy under Hypercorn")
    serve.add_argument("--host", help="listen address (CODEX_LB_HOST)")
    serve.add_argument("--port", type=int, help="listen port (CODEX_LB_PORT)")
    serve.add_argument("--workers", type=_workers, default=1,
                       help="worker processes (each one a replica; more than 1 needs PostgreSQL)")
    serve.set_defaults(func=run_serve)
    fake = sub.add_parser("fake-upstream", help="run the fake ChatGPT backend with injectable faults "
                          "(demos, benchmarks, failure rehearsals)")
    from codexlb.testing.fake_cli import add_arguments

    add_arguments(fake, port=8777)
    fake.set_defaults(func=run_fake, needs_settings=False)


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: allowed: a whole number >= 1")
    return value


def hypercorn_config(settings: Settings) -> Any:
    from hypercorn.config import Config

    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.graceful_timeout = settings.shutdown_grace_seconds
    config.keep_alive_timeout = 75
    config.websocket_max_message_size = 2 * settings.websocket_max_message_bytes  # the app answers up to 2x
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


class ListenFailed(Exception):
    """The listen address could not be bound (exit status 1)."""


def bind_sockets(config: Any, settings: Settings) -> Any:
    """Bind the listen address before anything else starts; a port in use is one line, not a traceback."""
    try:
        return config.create_sockets()
    except OSError as exc:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ListenFailed(f"cannot listen on {host}:{settings.port}: {reason}") from None


def check_workers(settings: Settings, workers: int) -> None:
    """Several workers are several replicas of one database: refuse SQLite with the reason."""
    if workers > 1 and settings.database_url.startswith("sqlite"):
        raise ConfigError(
            f"--workers {workers}: each worker is a separate replica with its own account pool, and "
            "replicas must share a database that several processes write at once; SQLite serialises "
            "writers on one file. Use PostgreSQL (CODEX_LB_DATABASE_URL=postgresql+asyncpg://...) "
            "or run a single worker.")


def serve_workers(settings: Settings, workers: int) -> int:
    """Hypercorn's multi-process mode: every worker imports :mod:`codexlb.asgi` (same checks).

    The plugins and the bind are also checked here, once, before any worker starts: Hypercorn's
    parent exits 0 whatever its workers exit with, so a refusal must not be left to them. When
    only the stored client keys can tell, they are counted here too.
    """
    from hypercorn.run import run

    from codexlb.bindcheck import check_bind
    from codexlb.cli.config import check_plugins
    from codexlb.db.migrate import DatabaseUnavailable
    from codexlb.keys.store import stored_key_count

    check_workers(settings, workers)
    pm = check_plugins(settings)
    stored = None
    if check_bind(settings, pm, warn=False):
        try:
            stored = asyncio.run(stored_key_count(settings))
        except DatabaseUnavailable as exc:
            print(f"codexlb: {exc}", file=sys.stderr)
            return 1
    check_bind(settings, pm, stored)
    os.environ[f"{PREFIX}HOST"], os.environ[f"{PREFIX}PORT"] = settings.host, str(settings.port)
    config = hypercorn_config(settings)
    config.workers, config.worker_class, config.application_path = workers, "uvloop", "codexlb.asgi:app"
    print(f"codexlb listening on http://{settings.host}:{settings.port} ({workers} workers)", flush=True)
    return run(config)


async def serve(settings: Settings) -> int:
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    from codexlb import hypercorn_eof
    from codexlb.app import create_app, lb_of, settle_heap

    hypercorn_eof.install()
    config = hypercorn_config(settings)
    try:
        sockets = bind_sockets(config, settings)
    except ListenFailed as exc:
        print(f"codexlb: {exc}", file=sys.stderr)
        return 1
    app = create_app(settings)
    lb = lb_of(app)
    try:
        await lb.start()
    except ConfigError:
        _close(sockets)
        raise
    except Exception as exc:
        _close(sockets)
        from codexlb.db.migrate import DatabaseUnavailable, MigrationFailed

        if isinstance(exc, MigrationFailed | DatabaseUnavailable):
            print(f"codexlb: {exc}", file=sys.stderr)
            return 1
        raise
    settle_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        lb.websockets.drain()  # no new WebSocket turns; idle sockets close with 1001
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping)
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)  # connections queue from now on; Hypercorn accepts them
    host, port = sockets.insecure_sockets[0].getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"codexlb listening on http://{shown}:{port} ({len(lb.pool.accounts)} account(s))", flush=True)
    try:
        await worker_serve(wrap_app(app, config.wsgi_max_body_size, None), config, sockets=sockets,
                           shutdown_trigger=stop.wait)
    finally:
        await lb.stop()
    return 0


def _close(sockets: Any) -> None:
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
        sock.close()


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; the bind safety check runs in ``CodexLB.start``."""
    if args.workers > 1:
        return serve_workers(settings, args.workers)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(serve(settings))
    return uvloop.run(serve(settings))


def run_fake(args: argparse.Namespace, settings: Settings | None) -> int:
    from codexlb.testing.fake_cli import run

    return run(args)
