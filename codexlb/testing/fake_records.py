"""Request recording for the fake upstream: case-preserving headers and decoded bodies."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import zstandard
from aiohttp import web


@dataclass(frozen=True)
class Headers:
    """Header pairs in wire order with their original case; lookups are case-insensitive."""

    items: tuple[tuple[str, str], ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` or ``default``."""
        lower = name.lower()
        return next((v for k, v in self.items if k.lower() == lower), default)

    def getall(self, name: str) -> list[str]:
        """Every value of ``name`` in order."""
        lower = name.lower()
        return [v for k, v in self.items if k.lower() == lower]

    def names(self) -> list[str]:
        """Header names as sent."""
        return [k for k, _ in self.items]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class RecordedRequest:
    """One request as the fake saw it: ``body`` is decoded (content-encoding undone), ``raw_body`` as sent."""

    method: str
    path: str
    query: dict[str, str]
    query_string: str
    headers: Headers
    body: bytes
    raw_body: bytes
    json: Any
    endpoint: str
    time: float
    account_id: str | None = None
    fault: str | None = None
    """The kind of the fault that answered this request, if one did."""
    extra: dict[str, Any] = field(default_factory=dict)


RECORDED = web.RequestKey("codexlb_fake_recorded", RecordedRequest)


def recorded(request: web.Request) -> RecordedRequest:
    """The :class:`RecordedRequest` the fake's middleware attached to ``request``."""
    return request[RECORDED]


def _decode_one(coding: str, data: bytes) -> bytes:
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if coding in ("gzip", "x-gzip"):
        return gzip.decompress(data)
    if coding == "deflate":
        try:
            return zlib.decompress(data)
        except zlib.error:
            return zlib.decompress(data, -zlib.MAX_WBITS)
    if coding == "br":
        import brotli

        decoded: bytes = brotli.decompress(data)
        return decoded
    if coding == "identity":
        return data
    raise LookupError(coding)


def decode_body(raw: bytes, encoding: str | None) -> bytes:
    """Undo ``Content-Encoding`` (zstd, gzip, deflate, br, identity); ``ValueError`` if impossible."""
    data = raw
    for coding in reversed([c.strip().lower() for c in (encoding or "").split(",") if c.strip()]):
        try:
            data = _decode_one(coding, data)
        except LookupError as exc:
            raise ValueError(f"unsupported content-encoding {coding!r}") from exc
        except Exception as exc:  # zstd/zlib/brotli errors share no base class
            raise ValueError(f"could not decode {coding} body: {exc}") from exc
    return data


def parse_json(body: bytes) -> Any:
    """Parsed JSON or ``None``."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
