"""A registry of secret values that must never be logged.

Code that mints or invents credentials in tests (the fake upstream's tokens, test API keys)
calls :func:`register_secret`; a test suite can then check what was logged against
:func:`registered_secrets` (codexlb's own suite does so for every test session).
"""

from __future__ import annotations

import threading

__all__ = ["register_secret", "registered_secrets"]

MIN_SECRET_LENGTH = 8
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(*values: str | None) -> None:
    """Remember values that must never appear in logs (too short or empty values are ignored)."""
    with _lock:
        _secrets.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH)


def registered_secrets() -> frozenset[str]:
    with _lock:
        return frozenset(_secrets)
