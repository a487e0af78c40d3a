"""The keys a running proxy accepts, held in memory: a presented key is checked with one hash and one lookup."""

from __future__ import annotations

import time
from collections.abc import Iterable

from codexlb.keys.secret import hash_key, static_key_id
from codexlb.keys.store import ApiKey

STATIC_NAME = "CODEX_LB_API_KEYS"


class KeyRing:
    """Stored keys (reloaded every few seconds) plus the static keys from ``CODEX_LB_API_KEYS``."""

    def __init__(self, static_keys: Iterable[str] = ()) -> None:
        self.static: dict[str, ApiKey] = {}
        for secret in static_keys:
            if secret:
                digest = hash_key(secret)
                self.static[digest] = ApiKey(id=static_key_id(digest), name=STATIC_NAME, key_hash=digest,
                                             key_prefix="static")
        self.by_hash: dict[str, ApiKey] = dict(self.static)
        self.by_id: dict[str, ApiKey] = {}
        self.loaded = False

    def load(self, keys: Iterable[ApiKey]) -> None:
        """Replace the stored keys (revoked and expired ones included: they still make keys required)."""
        stored = list(keys)
        self.by_hash = {**{k.key_hash: k for k in stored}, **self.static}
        self.by_id = {k.id: k for k in stored}
        self.loaded = True

    def put(self, key: ApiKey) -> None:
        """Add or replace one stored key at once (after a change through this process's API)."""
        old = self.by_id.get(key.id)
        if old is not None:
            self.by_hash.pop(old.key_hash, None)
        self.by_id[key.id] = key
        self.by_hash[key.key_hash] = key

    @property
    def required(self) -> bool:
        """Whether clients must present a key: some key exists, in the database or the setting."""
        return bool(self.by_hash)

    def current(self, key: ApiKey, now: float | None = None) -> ApiKey | None:
        """The ring's record of ``key`` if it is still active (not revoked, expired or rotated since)."""
        found = self.by_hash.get(key.key_hash)
        if found is None or found.state(time.time() if now is None else now) != "active":
            return None
        return found

    def find(self, presented: str, now: float | None = None) -> ApiKey | None:
        """The active key matching ``presented``; ``None`` for unknown, revoked or expired keys alike."""
        key = self.by_hash.get(hash_key(presented))
        if key is None or key.state(time.time() if now is None else now) != "active":
            return None
        return key
