"""A bounded memo for the hot path: a dict that learns each key's value at its first lookup."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Learnt(dict[K, V]):
    """``learnt[key]`` is ``derive(key)``, computed at the first lookup of ``key`` and kept.

    For values derived from a few keys that recur on every request (header spellings, sets of
    event types): a hit is a plain dict lookup, cheaper than a call through ``functools.lru_cache``.
    At ``limit`` keys it is emptied, so keys a client chooses cannot grow it without bound.
    """

    __slots__ = ("derive", "limit")

    def __init__(self, derive: Callable[[K], V], limit: int = 256) -> None:
        super().__init__()
        self.derive, self.limit = derive, limit

    def __missing__(self, key: K) -> V:
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.derive(key)
        return value
