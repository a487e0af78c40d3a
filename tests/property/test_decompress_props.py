"""Properties of the request-body decompressor: exact bytes or a 4xx, and never much past the cap."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import brotli
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from codexlb.errors import FlowError, PayloadTooLarge
from plugins.decompress import decode, parse_encodings

ENCODERS = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "x-gzip": lambda data: gzip.compress(data, mtime=0),
    "deflate": zlib.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "br": brotli.compress,
    "identity": lambda data: data,
}
CODINGS = st.lists(st.sampled_from(sorted(ENCODERS)), min_size=1, max_size=3)
CAP = 1 << 20


def encode(data: bytes, codings: list[str]) -> bytes:
    """Apply ``codings`` in header order (the first listed was applied first)."""
    for coding in codings:
        data = ENCODERS[coding](data)
    return data


@given(st.binary(max_size=4096), CODINGS)
def test_any_stack_of_encodings_decodes_to_the_exact_bytes(data: bytes, codings: list[str]) -> None:
    assert decode(encode(data, codings), parse_encodings(", ".join(codings)), CAP) == data


@given(st.binary(min_size=1, max_size=2048), CODINGS, st.integers(min_value=0), st.integers(0, 255),
       st.sampled_from(["truncate", "flip", "append"]))
def test_damaged_bodies_give_a_4xx_or_the_exact_bytes(data: bytes, codings: list[str], where: int, byte: int,
                                                      damage: str) -> None:
    body = bytearray(encode(data, codings))
    at = where % len(body) if body else 0
    if damage == "truncate":
        body = body[:at]
    elif damage == "flip" and body:
        body[at] ^= byte or 1
    else:
        body += bytes([byte])
    try:
        out = decode(bytes(body), parse_encodings(", ".join(codings)), CAP)
    except FlowError as exc:
        assert 400 <= exc.status < 500, exc
    else:
        if all(c == "identity" for c in codings):
            assert out == bytes(body)
        else:
            assert isinstance(out, bytes) and len(out) <= CAP


@settings(max_examples=25)
@given(st.integers(1, 8), st.sampled_from(["gzip", "deflate", "zstd", "br"]), st.integers(14, 18))
def test_bombs_are_refused_with_a_4xx_while_holding_little_more_than_the_cap(
        mebibytes: int, coding: str, cap_bits: int) -> None:
    cap = 1 << cap_bits
    bomb = ENCODERS[coding](bytes(mebibytes << 20))
    tracemalloc.start()
    try:
        decode(bomb, [coding], cap)
    except PayloadTooLarge as exc:
        assert exc.status == 413
    except FlowError as exc:  # a zstd frame whose window is far above the cap is refused before decoding
        assert coding == "zstd" and exc.status == 400 and "too much memory" in exc.message
    else:
        raise AssertionError("a body larger than the cap was accepted")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 4 * cap + (512 << 10), f"peak {peak} bytes for a cap of {cap}"
