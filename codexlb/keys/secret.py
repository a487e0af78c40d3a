"""Client API key secrets: the ``sk-clb-`` format and the hash that is stored instead of the key.

Keys are ``sk-clb-`` followed by 32 random bytes from :mod:`secrets`, base64url-encoded (43
characters). Only ``SHA-256(key)`` is stored. A slow password hash (argon2, bcrypt) defends
low-entropy passwords against guessing; a 256-bit random key cannot be guessed, so a fast hash is
as safe here, and it lets the proxy check a key with one hash and one dictionary lookup, with no
database round trip and no measurable cost per request. Comparing hashes through a dictionary
leaks nothing useful: timing could at most reveal a prefix of a hash, not of a key.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

PREFIX = "sk-clb-"
RANDOM_BYTES = 32
SHOWN_PREFIX_CHARS = len(PREFIX) + 4
"""``key_prefix`` keeps ``sk-clb-`` and 4 characters of the random part: enough to recognise a key."""


def new_key() -> str:
    """A fresh key: ``sk-clb-`` and 32 random bytes, base64url without padding."""
    return PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(RANDOM_BYTES)).rstrip(b"=").decode()


def hash_key(key: str) -> str:
    """The stored form of a key: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def shown_prefix(key: str) -> str:
    """What lists show of a key (``sk-clb-AbCd``)."""
    return key[:SHOWN_PREFIX_CHARS]


def static_key_id(key_hash: str) -> str:
    """The id under which a key from ``CODEX_LB_API_KEYS`` appears in the request log."""
    return "static:" + key_hash[:12]


def presented_keys(headers: dict[str, str]) -> list[tuple[str, str]]:
    """``(header, key)`` pairs as clients send keys: ``Authorization: Bearer <key>`` and ``x-api-key``."""
    offered: list[tuple[str, str]] = []
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        offered.append(("authorization", value.strip()))
    if headers.get("x-api-key", "").strip():
        offered.append(("x-api-key", headers["x-api-key"].strip()))
    return offered
