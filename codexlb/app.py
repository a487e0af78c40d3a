"""The application: :class:`CodexLB` holds shared state; :func:`create_app` builds the Quart app."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from quart import Quart

from codexlb.bindcheck import check_bind
from codexlb.errors import ConfigError
from codexlb.finisher import Finisher
from codexlb.hooks import Hooks
from codexlb.jobs import ModelRegistry, Scheduler
from codexlb.memory import reclaim_loop, tune_allocator
from codexlb.pipeline import Pipeline
from codexlb.plugin_loader import make_plugin_manager
from codexlb.pool import AccountPool
from codexlb.settings import Settings, load_settings
from codexlb.tasks import TaskSet
from codexlb.tokens import TokenManager
from codexlb.websocket.registry import Connections

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from codexlb.db.crypto import TokenCipher
    from codexlb.db.migrate import MigrationReport
    from codexlb.db.store import AccountStore

log = logging.getLogger("codexlb")
FLUSH_INTERVAL_SECONDS = 1.0
SYNC_INTERVAL_SECONDS = 3.0
"""How often the pool merges the database's view, so a change made elsewhere (the CLI, another
replica) is honoured here within about this plus one flush tick (under 5 s)."""


GC_THRESHOLDS = (10_000, 10, 10)
"""The collector's generation thresholds while serving (CPython's default: 700, 10, 10)."""


def settle_heap() -> None:
    """Once the server has started: take what start-up built out of the garbage collector's way.

    Everything imported and built by then lives as long as the process. :func:`gc.freeze` keeps
    every later full collection from walking those ~150,000 objects again (each one took tens of
    milliseconds), and a higher first threshold makes the young collections, which a request's
    short-lived objects trigger, rarer. Measured in ``bench/RESULTS.md`` ("The pipeline's own cost").
    The C allocator's thresholds are fixed too (:func:`codexlb.memory.tune_allocator`).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    tune_allocator()


class CodexLB:
    """Shared objects of one app: settings, plugins, account pool, database. Passed to every hook."""

    def __init__(self, settings: Settings, plugins: Iterable[object] = ()) -> None:
        self.settings = settings
        self.pm = make_plugin_manager(settings.pipeline_plugins, plugins)
        self.hooks = Hooks(self.pm, self)
        self.hooks.configure(settings)
        self.pool = AccountPool()
        self.tokens = TokenManager(self)
        self.pipeline = Pipeline(self, self.hooks)
        self.tasks = TaskSet()
        self.finisher = Finisher(self.hooks, self.tasks)
        """Runs ``flow_done`` for finished flows (one queue, one task)."""
        self.websockets = Connections()
        """Open WebSocket sessions (drained on SIGTERM)."""
        self.engine: AsyncEngine | None = None
        self.sessionmaker: async_sessionmaker[AsyncSession] | None = None
        self.cipher: TokenCipher | None = None
        self.store: AccountStore | None = None
        self.readiness: dict[str, str] = {"database": "not started", "migrations": "not started"}
        self.started = False
        self.migration_report: MigrationReport | None = None
        self.quart: Quart | None = None
        # -- background jobs: model list cache and the job scheduler ------------------
        self.models = ModelRegistry(self)
        self.jobs = Scheduler(self)

    async def start(self) -> None:
        """Open the database (migrating as configured), load accounts, start plugins and jobs.

        Raises :class:`codexlb.ConfigError` (exit 2) for an unsafe bind (before the database is
        opened, or right after it when only the stored client keys can tell) or ``MigrationFailed``
        (exit 1).
        """
        if self.started:
            return
        check_bind(self.settings, self.pm, warn=False)
        from codexlb.db.crypto import load_cipher
        from codexlb.db.engine import make_engine, make_sessionmaker
        from codexlb.db.migrate import prepare_database
        from codexlb.db.store import AccountStore

        self.settings.ensure_dirs()
        self.engine = make_engine(self.settings)
        try:
            report = self.migration_report = await prepare_database(self.settings, self.engine)
            self.readiness = {"database": "ok", "migrations": "ok" if report.ok else str(report.error)}
            self.sessionmaker = make_sessionmaker(self.engine)
            await self._check_bind_with_stored_keys(report.error is None)
            if report.error is None:
                self.cipher = await load_cipher(self.settings, self.engine)
                self.store = AccountStore(self.sessionmaker, self.cipher)
                self.pool.load(await self.store.list())
            await self.hooks.startup()
            if report.error is None:  # without a usable schema: serve /readyz and 503s, run no jobs
                await self.jobs.start()
        except BaseException:
            await self.engine.dispose()
            raise
        self.tasks.spawn(self._flush_loop(), "pool-flush")
        self.tasks.spawn(reclaim_loop(), "memory-reclaim")
        self.started = True
        log.info("codexlb ready: %d account(s), plugins: %s", len(self.pool.accounts),
                 ", ".join(self.settings.pipeline_plugins))

    async def _check_bind_with_stored_keys(self, readable: bool) -> None:
        """The bind check again, now that the client keys stored in the database can be counted."""
        from codexlb.bindcheck import unreadable_keys_refusal
        from codexlb.keys.store import KeyStore

        assert self.sessionmaker is not None
        stored = await KeyStore(self.sessionmaker).count() if readable else None
        if check_bind(self.settings, self.pm, stored):
            raise ConfigError(unreadable_keys_refusal(self.settings))

    async def stop(self) -> None:
        """Stop plugins (reverse order), write pending account state, close the database."""
        if not self.started:
            return
        self.started = False
        await self.jobs.stop()
        await self.finisher.settle(timeout=10)  # every finished flow observed before the plugins stop
        await self.tasks.cancel_all()
        await self.hooks.shutdown()
        if self.store is not None:
            await self.pool.flush(self.store)
        if self.engine is not None:
            await self.engine.dispose()

    async def _flush_loop(self) -> None:
        """Write changed account state every second; pick up others' changes every ``SYNC_INTERVAL_SECONDS``.

        Other changes are the CLI (login, pause, remove) and other replicas sharing the database.
        """
        loop = asyncio.get_running_loop()
        synced_at = loop.time()
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            if self.store is None:
                continue
            await self.pool.flush(self.store)
            if loop.time() - synced_at >= SYNC_INTERVAL_SECONDS:
                synced_at = loop.time()
                try:
                    self.pool.sync(await self.store.list())
                except Exception:
                    log.warning("could not read accounts from the database; will retry", exc_info=True)

    async def check_ready(self) -> dict[str, Any]:
        """What ``/readyz`` reports: database reachable and migrated."""
        if self.engine is None:
            return {"ready": False, **self.readiness}
        from codexlb.db.migrate import readiness

        try:
            state = await readiness(self.engine, report=self.migration_report)
        except Exception as exc:  # report, never raise, from a health check
            state = {"database": f"error: {type(exc).__name__}"}
        ok = all(value == "ok" for value in state.values())
        return {"ready": ok, **state}


def create_app(settings: Settings | None = None, *, plugins: Iterable[object] = ()) -> Quart:
    """Build the Quart app; ``plugins`` are extra plugin objects, called before the listed ones."""
    from codexlb.web import admin, admission, api, compat, dashboard, fast_path, jobs_api, proxy, responses_ws

    settings = settings or load_settings()
    lb = CodexLB(settings, plugins)
    app = Quart("codexlb")
    app.config.update(MAX_CONTENT_LENGTH=settings.max_decompressed_body_bytes, RESPONSE_TIMEOUT=None,
                      BODY_TIMEOUT=120, PROVIDE_AUTOMATIC_OPTIONS=False)
    app.codexlb = lb  # type: ignore[attr-defined]
    lb.quart = app
    for blueprint in (proxy.blueprint, compat.blueprint, responses_ws.blueprint, admin.blueprint, api.blueprint,
                      jobs_api.blueprint, *lb.hooks.register_routes()):  # jobs_api after proxy
        app.register_blueprint(blueprint)
    dashboard.install(app)
    admission.install(app)  # every route: client admission, the admin guard, the dashboard's, or public
    admin.install_error_handlers(app)
    posts = {path: endpoint for (method, path), endpoint in proxy.ROUTES.items() if method == "POST"}
    app.asgi_app = fast_path.FastRoutes(lb, app.asgi_app, posts)  # type: ignore[method-assign]

    @app.while_serving  # type: ignore[type-var]
    async def lifespan() -> AsyncIterator[None]:
        await lb.start()
        yield
        await lb.stop()

    return app


def lb_of(app: Quart) -> CodexLB:
    """The :class:`CodexLB` of a Quart app built by :func:`create_app`."""
    lb: CodexLB = app.codexlb  # type: ignore[attr-defined]
    return lb
