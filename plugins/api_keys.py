"""Client API keys: every client request needs a valid key as soon as any key exists.

Hooks: ``configure``, ``register_routes`` (``/api/keys``), ``startup``/``shutdown`` (load keys, run
the sync), ``admit_request`` (check the key, reserve a request), ``transform_request`` (model
allowlist), ``flow_done`` (count tokens).

Keys come from the database (``codexlb keys create``, ``/api/keys``) and from ``CODEX_LB_API_KEYS``
(static keys: no limits, no scope). Clients send ``Authorization: Bearer <key>`` or
``x-api-key: <key>``; the header is removed before the request travels upstream. With no key at
all (none stored, revoked ones included, and the setting empty) requests need none. A WebSocket
turn uses the key of its connection's handshake (``flow.handshake``), checked again and counted
for every turn.

No database work happens per request: keys and window counters live in memory
(:mod:`codexlb.keys.ring`, :mod:`codexlb.keys.usage`) and are synced with the database every
``sync_interval_seconds`` (new keys, revocations and rotations from the CLI or other replicas
arrive then; counts and last-used times are written then).

Answers: 401 ``invalid_api_key`` (missing, unknown, revoked or expired, all alike); 429
``api_key_limit_reached`` with the limit, ``resets_at``, ``Retry-After`` and ``x-should-retry:
false``; 403 ``model_not_allowed``; 503 ``api_keys_not_loaded`` while keys could not be read.

Settings table ``[plugins.api_keys]``:
- ``sync_interval_seconds`` (float, default 2.0, 0.05..300): how often keys are reloaded and
  counters shared with the database (and so with other replicas).
Core settings used: ``API_KEYS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from codexlb import Flow, ProxyResponse, StashKey, hookimpl
from codexlb.keys.ring import KeyRing
from codexlb.keys.secret import presented_keys
from codexlb.keys.store import ApiKey, KeyStore
from codexlb.keys.usage import Counters, Refusal
from codexlb.options import PluginOptions

if TYPE_CHECKING:
    from quart import Blueprint

    from codexlb.settings import Settings
    from codexlb.types import AppView

log = logging.getLogger("codexlb.api_keys")
KEY = StashKey[ApiKey]()
COUNTED = StashKey[bool]()
WINDOW_NAMES = {"5h": "5 hours", "day": "day", "week": "week", "month": "month"}


def limit_response(key: ApiKey, refusal: Refusal, now: float) -> ProxyResponse:
    """The 429 for a key over one of its limits."""
    wait = max(1, math.ceil(refusal.resets_at - now))
    limit = refusal.limit
    what = limit.metric.replace("_", " ")
    return ProxyResponse.error(
        429, "api_key_limit_reached",
        f"API key {key.name!r} reached its limit of {limit.max} {what} per {WINDOW_NAMES[limit.window]}; "
        f"it resets in {wait} s",
        type="rate_limit_error", headers=[("retry-after", str(wait)), ("x-should-retry", "false")],
        limit={**limit.as_dict(), "used": refusal.used}, resets_at=math.ceil(refusal.resets_at),
        resets_in_seconds=wait)


class ApiKeys:
    """Checks presented keys against the in-memory key ring and the window counters."""

    def __init__(self) -> None:
        self.ring = KeyRing()
        self.counters = Counters()
        self.store: KeyStore | None = None
        self.sync_interval_seconds = 2.0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.enforces_admission = frozenset({"api_keys"})
        """For the start-up bind check (:mod:`codexlb.bindcheck`): keys are required whenever any exists."""

    @hookimpl
    def configure(self, config: Mapping[str, Any], settings: Settings) -> None:
        options = PluginOptions("api_keys", config, ("sync_interval_seconds",))
        self.sync_interval_seconds = options.number("sync_interval_seconds", 2.0, low=0.05, high=300)
        self.ring = KeyRing(settings.api_keys)

    @hookimpl
    def register_routes(self) -> Blueprint:
        from codexlb.web.keys_api import blueprint

        return blueprint

    @hookimpl
    async def startup(self, app: AppView) -> None:
        report = app.migration_report
        if app.sessionmaker is None or (report is not None and report.error is not None):
            log.warning("API keys not loaded (the database is not ready): client requests are refused")
            return
        self.store = KeyStore(app.sessionmaker)
        self._lock = asyncio.Lock()
        await self.sync()
        self._task = app.tasks.spawn(self._run(), "api_keys-sync")

    async def sync(self) -> None:
        """Reload keys and share counters with the database (what the background loop does)."""
        if self.store is None:
            return
        async with self._lock:
            keys = await self.store.list()
            self.ring.load(keys)
            now = time.time()
            await self.counters.sync(self.store, [k.id for k in keys if k.state(now) == "active"], now)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval_seconds)
            try:
                await self.sync()
            except Exception as exc:
                log.warning("could not sync API keys with the database (will retry): %s", type(exc).__name__)

    @hookimpl
    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.sync()
        except Exception as exc:
            log.warning("could not write API key counters at shutdown: %s", type(exc).__name__)

    @hookimpl
    async def admit_request(self, flow: Flow) -> None:
        if not self.ring.loaded:
            flow.reject(503, "api_keys_not_loaded", "API keys could not be read from the database; see /readyz")
            return
        if not self.ring.required:
            return
        now = time.time()
        headers = flow.request.headers
        if flow.handshake is not None:  # a WebSocket turn: its key was presented with the handshake
            held = flow.handshake.stash.get(KEY)
            key = self.ring.current(held, now) if held is not None else None
        else:
            key = self._presented(headers, now)
        if key is None:
            flow.response = ProxyResponse.error(
                401, "invalid_api_key", "missing or invalid API key: send 'Authorization: Bearer <key>' or "
                "'x-api-key: <key>' with a key from `codexlb keys create` or CODEX_LB_API_KEYS",
                headers=[("www-authenticate", 'Bearer realm="codexlb"')])
            flow.error_code = "invalid_api_key"
            return
        flow.api_key_id, flow.api_key_name = key.id, key.name
        flow.stash[KEY] = key
        if key.accounts is not None:
            flow.account_scope = frozenset(key.accounts)
        if flow.request.method != "POST":  # model lists: a valid key suffices, nothing is counted
            return
        refusal = self.counters.admit(key, now)
        if refusal is not None:
            flow.response = limit_response(key, refusal, now)
            flow.error_code = "api_key_limit_reached"
            return
        flow.stash[COUNTED] = True

    def _presented(self, headers: dict[str, str], now: float) -> ApiKey | None:
        """The active key the client sent, its header removed (our credential, never forwarded)."""
        for header, presented in presented_keys(headers):
            key = self.ring.find(presented, now)
            if key is not None:
                headers.pop(header, None)
                return key
        return None

    @hookimpl
    async def transform_request(self, flow: Flow) -> None:
        key = flow.stash.get(KEY)
        if key is None or key.models is None:
            return
        model = flow.model
        if model not in key.models:
            flow.reject(403, "model_not_allowed",
                        f"model {model!r} is not allowed for this API key (allowed: {', '.join(key.models)})",
                        type="permission_error")

    @hookimpl
    async def flow_done(self, flow: Flow) -> None:
        key = flow.stash.get(KEY)
        if key is not None and flow.usage is not None and flow.stash.get(COUNTED):
            self.counters.add_tokens(key, flow.usage)
