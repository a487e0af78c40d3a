"""Undo the request's ``Content-Encoding`` with a hard cap on the decoded size.

Hooks: ``configure``, ``decode_request``.

Accepts ``zstd``, ``gzip`` (``x-gzip``, several members too), ``deflate`` (zlib-wrapped or raw),
``br`` and ``identity``, also stacked (``gzip, zstd`` was applied gzip first, so it is decoded
zstd first). Decoding is incremental with bounded output per step: a body that grows past
``MAX_DECOMPRESSED_BODY_BYTES`` is refused with 413 ``payload_too_large`` as soon as it passes
that many bytes, so a zip bomb costs at most about the cap in memory while it is decoded, and
nothing once it is refused (the refusal keeps no reference to the decoder or its output). At most
``max_concurrent`` bodies are decoded at once; others wait their turn, so many bombs at once cost
at most ``max_concurrent`` caps. A zstd frame may ask for a window of at most 8 MiB (or the cap,
if smaller); zstd's own encoder never needs more below level 20 without ``--long``. An unknown
encoding is 415 ``unsupported_content_encoding``; a body that does not decode is 400
``invalid_body_encoding``. Afterwards ``flow.request.body`` holds the decoded bytes and
``content-encoding`` (and the stale ``content-length``) are gone from ``flow.request.headers``.
Codex CLI sends zstd bodies.

Settings table ``[plugins.decompress]``:
- ``max_concurrent`` (int, default 4): bodies decoded at the same time.

Core setting used: ``MAX_DECOMPRESSED_BODY_BYTES``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import brotli
import zstandard

from codexlb import BadRequest, Flow, FlowError, PayloadTooLarge, UnsupportedEncoding, hookimpl
from codexlb.options import PluginOptions

if TYPE_CHECKING:
    from codexlb.settings import Settings

STEP = 64 * 1024
"""Input fed to a decoder per step; output per step is bounded by the room left under the cap."""
ALIASES = {"x-gzip": "gzip"}
ZSTD_BLOCK_MAX = 128 * 1024
ZSTD_MAX_WINDOW = 8 << 20
"""Largest window a zstd frame may ask for (libzstd allocates it per decode)."""
THREAD_THRESHOLD = 256 * 1024
"""Compressed bodies larger than this are decoded in a worker thread."""


class DecodeError(ValueError):
    """The body is not valid in the declared encoding."""


def too_large_message(cap: int) -> str:
    return f"decompressed request body exceeds {cap} bytes (CODEX_LB_MAX_DECOMPRESSED_BODY_BYTES)"


class Sink:
    """Collects decoded pieces and stops at the cap."""

    def __init__(self, cap: int) -> None:
        self.cap, self.size = cap, 0
        self.parts: list[bytes] = []

    @property
    def room(self) -> int:
        """How much more output may be produced before the cap is exceeded (always >= 1)."""
        return self.cap - self.size + 1

    def add(self, piece: bytes) -> None:
        if piece:
            self.size += len(piece)
            if self.size > self.cap:
                self.parts.clear()
                raise PayloadTooLarge(too_large_message(self.cap))
            self.parts.append(piece)

    def result(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


def _inflate_member(data: memoryview, wbits: int, sink: Sink) -> memoryview:
    """Inflate one zlib/gzip/raw stream; returns the bytes after its end."""
    d = zlib.decompressobj(wbits)
    pos = 0
    while not d.eof:
        if d.unconsumed_tail:
            source: bytes | memoryview = d.unconsumed_tail
        elif pos < len(data):
            source, pos = data[pos:pos + STEP], pos + STEP
        else:  # all input used: output stopped short of the room, so nothing is pending
            raise DecodeError("compressed data is truncated")
        sink.add(d.decompress(source, sink.room))
    rest = d.unused_data + bytes(data[pos:]) if pos < len(data) else d.unused_data
    return memoryview(rest)


def decode_gzip(data: bytes, cap: int) -> bytes:
    sink, rest = Sink(cap), memoryview(data)
    while True:
        rest = _inflate_member(rest, 16 + zlib.MAX_WBITS, sink)
        if not rest or not any(rest):  # end, or zero padding after the last member
            return sink.result()
        if bytes(rest[:2]) != b"\x1f\x8b":
            raise DecodeError("unexpected data after the gzip stream")


def decode_deflate(data: bytes, cap: int) -> bytes:
    """``deflate`` is meant to be zlib-wrapped, but some clients send raw deflate: accept both."""
    wrapped = len(data) >= 2 and (data[0] & 0x0F) == 8 and (data[0] >> 4) <= 7 and \
        ((data[0] << 8) | data[1]) % 31 == 0
    sink = Sink(cap)
    rest = _inflate_member(memoryview(data), zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS, sink)
    if rest:
        raise DecodeError("unexpected data after the deflate stream")
    return sink.result()


def decode_zstd(data: bytes, cap: int) -> bytes:
    """Frame by frame; input is fed in steps small enough that one step cannot overshoot the room.

    A zstd block yields at most 128 KiB and takes at least 4 bytes (an RLE block), so feeding
    ``4 * room / 128 KiB`` bytes produces at most ``room`` plus one pending block.
    """
    window = min(max(1 << 20, 1 << (cap - 1).bit_length()), ZSTD_MAX_WINDOW)
    dctx = zstandard.ZstdDecompressor(max_window_size=window)
    sink, pos = Sink(cap), 0
    while pos < len(data):
        d = dctx.decompressobj()
        while not d.eof:
            if pos >= len(data):
                raise DecodeError("compressed data is truncated")
            step = max(4, sink.room // ZSTD_BLOCK_MAX * 4)
            piece = data[pos:pos + step]
            pos += len(piece)
            sink.add(d.decompress(piece))
        pos -= len(d.unused_data)
    return sink.result()


def decode_br(data: bytes, cap: int) -> bytes:
    d = brotli.Decompressor()
    sink, pos = Sink(cap), 0
    while not d.is_finished():
        if not d.can_accept_more_data():
            piece = d.process(b"", output_buffer_limit=sink.room)
        elif pos < len(data):
            piece = d.process(data[pos:pos + STEP], output_buffer_limit=sink.room)
            pos += STEP
        else:
            raise DecodeError("compressed data is truncated")
        sink.add(piece)
    if pos < len(data):
        raise DecodeError("unexpected data after the brotli stream")
    return sink.result()


DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": decode_gzip, "deflate": decode_deflate, "zstd": decode_zstd, "br": decode_br,
    "identity": lambda data, cap: data,
}
ERRORS = (DecodeError, zlib.error, zstandard.ZstdError, brotli.error)


def parse_encodings(header: str) -> list[str]:
    """Codings in the order they were applied; 415 for an unknown one."""
    codings = [ALIASES.get(c, c) for c in (part.strip().lower() for part in header.split(",")) if c]
    unknown = [c for c in codings if c not in DECODERS]
    if unknown:
        raise UnsupportedEncoding(f"Content-Encoding {unknown[0]!r} is not supported; "
                                  f"supported: {', '.join(DECODERS)}")
    return codings


def decode(data: bytes, codings: list[str], cap: int) -> bytes:
    """Undo ``codings`` (as listed in the header) last first, each step capped at ``cap``.

    The error raised is a new one, made after the decoder's frames are gone: an exception caught
    from inside them would keep them alive (through its traceback), and with them the decoder's
    window and up to a cap of output, for as long as anything holds the error.
    """
    for coding in reversed(codings):
        if coding == "identity":
            continue
        refused: FlowError | None = None
        try:
            data = DECODERS[coding](data, cap)
        except PayloadTooLarge:
            refused = PayloadTooLarge(too_large_message(cap))
        except ERRORS as exc:
            refused = BadRequest(f"request body could not be decoded as {coding}: {exc}",
                                 code="invalid_body_encoding")
        if refused is not None:  # raised here, with no context: see above
            raise refused
    return data


class Decompress:
    """Decodes compressed request bodies before the core parses them."""

    def __init__(self) -> None:
        self.cap = 32 << 20
        self.max_concurrent = 4
        self.slots = asyncio.Semaphore(self.max_concurrent)

    @hookimpl
    def configure(self, config: Mapping[str, Any], settings: Settings) -> None:
        options = PluginOptions("decompress", config, ("max_concurrent",),
                                hint="the cap is CODEX_LB_MAX_DECOMPRESSED_BODY_BYTES")
        self.max_concurrent = options.number("max_concurrent", self.max_concurrent, low=1, high=256, integer=True)
        self.slots = asyncio.Semaphore(self.max_concurrent)
        self.cap = settings.max_decompressed_body_bytes

    @hookimpl
    async def decode_request(self, flow: Flow) -> None:
        headers = flow.request.headers
        header = headers.get("content-encoding")
        if header is None:
            return
        codings = parse_encodings(header)
        body = flow.request.body
        if body and any(c != "identity" for c in codings):
            async with self.slots:
                if len(body) > THREAD_THRESHOLD:  # keep the event loop responsive for big bodies
                    flow.request.body = await asyncio.to_thread(decode, body, codings, self.cap)
                else:
                    flow.request.body = decode(body, codings, self.cap)
        headers.pop("content-encoding", None)
        headers.pop("content-length", None)
