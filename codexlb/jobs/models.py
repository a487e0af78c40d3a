"""The model registry: the upstream's model list, kept in sync and cached in the database.

:class:`ModelRegistryJob` (on the leader) fetches ``GET {UPSTREAM_BASE_URL}/codex/models?client_version=
{MODEL_REGISTRY_CLIENT_VERSION}`` with a usable account, revalidating with ``If-None-Match`` (a 304
keeps the cache), and stores the answer with :func:`codexlb.db.registry.put_registry`. Every process
loads the cached list at start (followers reload it every interval), so ``/v1/models`` and
``/backend-api/codex/models`` answer from memory, even right after a restart with the upstream down.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from codexlb.errors import UpstreamError
from codexlb.flow import ProxyResponse
from codexlb.jobs.base import Job, JobError
from codexlb.jobs.fetch import FetchError, account_headers, get_with_retries
from codexlb.translate import models_to_openai_list

if TYPE_CHECKING:
    from codexlb.db.registry import RegistryEntry
    from codexlb.types import Account, AppView

log = logging.getLogger("codexlb.jobs.models")
KEY_PREFIX = "codex_models:"
ACCOUNTS_TRIED = 3


def _version(value: Any) -> tuple[int, ...] | None:
    """``"0.142.2"`` or ``[0, 142, 2]`` as a tuple (``None`` when unreadable)."""
    parts: list[Any]
    if isinstance(value, str):
        parts = value.strip().split(".")
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        return None
    out = []
    for part in parts:
        digits = "".join(ch for ch in str(part) if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out) or None


class ModelRegistry:
    """The cached model list of this process (``lb.models``). Reading it never touches the database."""

    def __init__(self, lb: AppView) -> None:
        self.lb = lb
        self.entry: RegistryEntry | None = None

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.lb.settings.model_registry_client_version

    @property
    def enabled(self) -> bool:
        return self.lb.settings.model_registry_enabled

    @property
    def ready(self) -> bool:
        """Enabled and holding a model list (else the routes pass through to the upstream)."""
        return self.enabled and self.entry is not None and isinstance(self.models, list)

    @property
    def models(self) -> list[Any] | None:
        payload = self.entry.payload if self.entry is not None else None
        models = payload.get("models") if isinstance(payload, Mapping) else None
        return models if isinstance(models, list) else None

    @property
    def etag(self) -> str | None:
        return self.entry.etag if self.entry is not None else None

    async def load(self) -> bool:
        """Read the cached list from the database; ``True`` when there is one. Errors are logged."""
        if self.lb.sessionmaker is None:
            return False
        from codexlb.db.registry import get_registry

        try:
            entry = await get_registry(self.lb.sessionmaker, self.key)
        except Exception as exc:
            log.warning("could not load the model registry cache: %s", type(exc).__name__)
            return False
        if entry is not None and (self.entry is None or entry.fetched_at >= self.entry.fetched_at):
            self.entry = entry
        return self.entry is not None

    async def save(self, payload: Any, etag: str | None, fetched_at: float) -> None:
        """Use ``payload`` from now on and store it in the database."""
        from codexlb.db.registry import RegistryEntry, put_registry

        self.entry = RegistryEntry(self.key, etag, payload, fetched_at)
        if self.lb.sessionmaker is not None:
            await put_registry(self.lb.sessionmaker, self.key, payload=payload, etag=etag, fetched_at=fetched_at)

    def newer_than_cache(self, client_version: str | None) -> bool:
        """Whether ``client_version`` is newer than the version the cache was fetched for."""
        wanted = _version(client_version) if client_version else None
        cached = _version(self.lb.settings.model_registry_client_version)
        return wanted is not None and cached is not None and wanted > cached

    # -- answers ------------------------------------------------------------------------------
    def openai_response(self) -> ProxyResponse:
        """``GET /v1/models``."""
        return ProxyResponse.json(200, models_to_openai_list({"models": self.models or []}))

    def codex_response(self, client_version: str | None = None, if_none_match: str | None = None) -> ProxyResponse:
        """``GET /backend-api/codex/models``: the backend's shape with an ETag (304 when it matches).

        Entries needing a newer client than the caller's ``client_version`` are left out.
        """
        models = list(self.models or [])
        etag = self.etag
        wanted = _version(client_version) if client_version else None
        if wanted is not None:
            kept = [m for m in models if not isinstance(m, Mapping)
                    or (_version(m.get("minimal_client_version")) or ()) <= wanted]
            if len(kept) != len(models):
                models, etag = kept, None
        if etag is None:
            digest = hashlib.sha256(json.dumps(models, sort_keys=True).encode()).hexdigest()[:16]
            etag = f'W/"{digest}"'
        if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
            return ProxyResponse(304, [("etag", etag)], b"")
        return ProxyResponse.json(200, {"models": models}, [("etag", etag)])


class ModelRegistryJob(Job):
    """Refreshes ``lb.models`` from the upstream every ``MODEL_REGISTRY_REFRESH_INTERVAL_SECONDS``."""

    name = "models"
    description = "fetch /codex/models (ETag) and cache it in the database"
    timeout = 15.0
    backoff = 0.5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client: Any = None

    @property
    def enabled(self) -> bool:
        return self.lb.settings.model_registry_enabled

    @property
    def interval(self) -> float:
        return float(self.lb.settings.model_registry_refresh_interval_seconds)

    async def work(self, **options: Any) -> None:
        candidates = self.lb.pool.usable()[:ACCOUNTS_TRIED]
        if not candidates and not self.lb.pool.accounts:
            return  # nothing to fetch with yet: not a failure (the first account arrives later)
        if not candidates:
            raise JobError("no usable account to fetch the model list with")
        problems = []
        for account in candidates:
            try:
                await self.refresh_with(account)
                return
            except (FetchError, JobError) as exc:
                problems.append(f"{account.label}: {exc}")
        raise JobError("; ".join(problems))

    async def refresh_with(self, account: Account) -> bool:
        """Fetch with ``account``; ``True`` when the list changed (``False``: 304, cache kept)."""
        registry = self.lb.models
        token, answer = await self._get(account, registry.etag if registry.ready else None)
        if answer.status == 401:
            if not await self.lb.tokens.refresh(account, force=True, failed=token):
                raise FetchError("HTTP 401 and the token refresh did not succeed")
            _, answer = await self._get(account, registry.etag if registry.ready else None)
        if answer.status == 304 and registry.ready:
            return False
        if answer.status != 200:
            message = answer.message()
            raise FetchError(f"HTTP {answer.status}" + (f": {message}" if message else ""))
        try:
            payload = answer.json()
        except (ValueError, UnicodeDecodeError):
            raise FetchError("model list is not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
            raise FetchError("model list has no 'models' array")
        etag = answer.headers.get("etag") or (payload.get("etag") if isinstance(payload.get("etag"), str) else None)
        await registry.save(payload, etag, self.clock())
        log.info("model registry updated: %d model(s)", len(payload["models"]))
        return True

    async def _get(self, account: Account, etag: str | None) -> tuple[str, Any]:
        """The access token sent and the answer."""
        try:
            token = await self.lb.tokens.access_token(account)
        except UpstreamError as exc:
            raise JobError(exc.message) from None
        if self.client is None:
            raise JobError("scheduler not started (no HTTP client)")
        settings = self.lb.settings
        headers = account_headers(token, account.chatgpt_account_id)
        headers["originator"] = "codex_cli_rs"
        if etag:
            headers["if-none-match"] = etag
        return token, await get_with_retries(
            self.client, settings.upstream_base_url.rstrip("/") + "/codex/models",
            params={"client_version": settings.model_registry_client_version}, headers=headers,
            timeout=self.timeout, retries=settings.usage_fetch_max_retries, backoff=self.backoff)
