"""Decompress: every encoding, stacked encodings, caps, zip bombs with bounded memory, errors."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import random
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import brotli
import httpx
import pytest
import zstandard

from codexlb import BadRequest, ConfigError, PayloadTooLarge, UnsupportedEncoding
from codexlb.settings import Settings
from codexlb.testing import make_flow
from codexlb.testing.harness import proxy_server
from plugins.decompress import THREAD_THRESHOLD, Decompress, decode

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = next(ROOT.joinpath("tests", "fixtures", "codex-cli").glob("F05-*/0006-POST-*.json"))
PIPELINE = ("decompress", "select_round_robin", "upstream")
RAW = json.dumps({"model": "gpt-5", "input": "hi " * 2000, "store": False, "stream": True}).encode()


def gzip_bomb(total: int) -> bytes:
    """A valid-looking gzip stream of ``total`` zeros, built in O(compressed size).

    After a full flush deflate restarts without history, so the compressed form of each MiB
    of zeros is the same bytes: repeat them. (The trailer CRC is not computed; decoders give
    up at the cap long before they would check it.)
    """
    mib = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH) == block
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + block * (total >> 20) + c.flush(zlib.Z_FINISH) + struct.pack("<II", 0, total & 0xFFFFFFFF)


def zstd_bomb(total: int) -> bytes:
    """One zstd frame of RLE blocks: 4 bytes per 128 KiB of zeros, no declared content size."""
    block = 128 * 1024
    header = b"\x28\xb5\x2f\xfd" + b"\x00" + bytes([7 << 3])  # no FCS, window 2**(10+7)
    rle = ((1 << 1) | (block << 3)).to_bytes(3, "little") + b"\x00"
    last = (1 | (1 << 1) | (block << 3)).to_bytes(3, "little") + b"\x00"
    return header + rle * (total // block - 1) + last


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress, "x-gzip": gzip.compress, "deflate": zlib.compress, "zstd": zstandard.compress,
    "br": brotli.compress, "identity": lambda d: d,
}


def plugin(cap: int = 1 << 20) -> Decompress:
    p = Decompress()
    p.configure({}, Settings(max_decompressed_body_bytes=cap))
    return p


async def run(body: bytes, encoding: str | None, cap: int = 1 << 20) -> bytes | None:
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    if encoding is not None:
        headers["content-encoding"] = encoding
    flow = make_flow(headers=headers, body=body)
    await plugin(cap).decode_request(flow)
    assert "content-encoding" not in flow.request.headers
    return flow.request.body


# -- decoding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
async def test_each_encoding(encoding: str) -> None:
    assert await run(ENCODERS[encoding](RAW), encoding) == RAW


@pytest.mark.parametrize(("header", "body"), [
    ("deflate", deflate_raw(RAW)),  # raw deflate, as some clients send it
    ("GZIP", gzip.compress(RAW)),
    ("gzip", gzip.compress(RAW[:100]) + gzip.compress(RAW[100:])),  # two members
    ("gzip", gzip.compress(RAW) + b"\x00" * 8),  # zero padding
    ("zstd", zstandard.compress(RAW[:100]) + zstandard.compress(RAW[100:])),  # two frames
    ("gzip, zstd", zstandard.compress(gzip.compress(RAW))),  # gzip applied first
    ("deflate,br , gzip", gzip.compress(brotli.compress(zlib.compress(RAW)))),
    ("identity, gzip, identity", gzip.compress(RAW)),
    ("identity", RAW),
])
async def test_variants_and_stacks(header: str, body: bytes) -> None:
    assert await run(body, header) == RAW


async def test_no_encoding_leaves_body_alone() -> None:
    flow = make_flow(body=RAW)
    await plugin().decode_request(flow)
    assert flow.request.body is RAW


async def test_empty_body_is_left_to_the_parser() -> None:
    assert await run(b"", "gzip") == b""


async def test_large_body_decoded_in_thread() -> None:
    big = random.Random(7).randbytes(THREAD_THRESHOLD * 2)
    body = brotli.compress(big, quality=0)
    assert len(body) > THREAD_THRESHOLD
    assert await run(body, "br", cap=len(big)) == big


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["compress", "gzip, lzma", "x-custom", "gzip;q=1"])
async def test_unknown_encoding_415(header: str) -> None:
    with pytest.raises(UnsupportedEncoding) as info:
        await run(gzip.compress(RAW), header)
    assert info.value.status == 415 and info.value.code == "unsupported_content_encoding"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "br"])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "trailing"])
async def test_undecodable_400(encoding: str, damage: str) -> None:
    good = ENCODERS[encoding](RAW)
    body = {"garbage": b"definitely not compressed " * 3, "truncated": good[: len(good) // 2],
            "trailing": good + b"junk-after-the-end"}[damage]
    with pytest.raises(BadRequest) as info:
        await run(body, encoding)
    assert info.value.status == 400 and info.value.code == "invalid_body_encoding"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "br", "gzip, zstd"])
async def test_cap_is_exact(encoding: str) -> None:
    def encode(data: bytes) -> bytes:
        for coding in (c.strip() for c in encoding.split(",")):
            data = ENCODERS[coding](data)
        return data

    assert await run(encode(RAW), encoding, cap=len(RAW)) == RAW
    with pytest.raises(PayloadTooLarge) as info:
        await run(encode(RAW), encoding, cap=len(RAW) - 1)
    assert info.value.status == 413 and info.value.code == "payload_too_large"


@pytest.mark.parametrize(("encoding", "bomb"), [
    ("gzip", gzip_bomb(64 << 20)), ("zstd", zstd_bomb(64 << 20)), ("br", brotli.compress(bytes(16 << 20))),
    ("deflate", zlib.compress(bytes(16 << 20), 9)), ("zstd, gzip", gzip.compress(zstd_bomb(64 << 20))),
])
async def test_bombs_refused(encoding: str, bomb: bytes) -> None:
    with pytest.raises(PayloadTooLarge):
        await run(bomb, encoding, cap=1 << 20)


def test_configure_rejects_options() -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.decompress\]"):
        Decompress().configure({"max": 1}, Settings())
    with pytest.raises(ConfigError, match="max_concurrent"):
        Decompress().configure({"max_concurrent": 0}, Settings())


async def test_concurrent_decodes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import plugins.decompress as module

    active, peak, lock = 0, 0, threading.Lock()
    real = module.decode

    def counting(data: bytes, codings: list[str], cap: int) -> bytes:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)  # let other decodes start, if they may
        try:
            return real(data, codings, cap)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(module, "decode", counting)
    p = Decompress()
    p.configure({"max_concurrent": 2}, Settings(max_decompressed_body_bytes=1 << 20))
    raw = random.Random(3).randbytes(THREAD_THRESHOLD * 2)
    body = brotli.compress(raw, quality=0)  # big enough to be decoded in threads
    flows = [make_flow(headers={"content-encoding": "br"}, body=body) for _ in range(8)]
    await asyncio.gather(*(p.decode_request(f) for f in flows))
    assert all(f.request.body == raw for f in flows)
    assert peak == 2


def test_refusal_keeps_no_decoder_alive() -> None:
    """The 413 carries no traceback into the decoder, so holding it holds no window or output."""
    with pytest.raises(PayloadTooLarge) as info:
        decode(zstd_bomb(64 << 20), ["zstd"], 1 << 20)
    frames = []
    tb = info.value.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert frames[-1] == "decode" and info.value.__context__ is None


BOMB_SCRIPT = """
import resource, struct, sys, zlib
sys.path.insert(0, {root!r})
from codexlb import PayloadTooLarge
from plugins.decompress import decode
{builders}
bomb = gzip_bomb(2 << 30) if sys.argv[1] == "gzip" else zstd_bomb(2 << 30)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode(bomb, [sys.argv[1]], 4 << 20)
except PayloadTooLarge:
    pass
else:
    raise SystemExit("bomb was not refused")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_two_gib_bomb_keeps_memory_near_cap(encoding: str) -> None:
    builders = inspect.getsource(gzip_bomb) + "\n" + inspect.getsource(zstd_bomb)
    script = BOMB_SCRIPT.format(root=str(ROOT), builders=builders)
    done = subprocess.run([sys.executable, "-c", script, encoding], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    growth_kib = int(done.stdout.strip())
    print(f"{encoding}: peak RSS +{growth_kib} KiB for a 2 GiB bomb with a 4 MiB cap")
    assert growth_kib < 48 * 1024, f"peak RSS grew by {growth_kib} KiB decoding a 2 GiB {encoding} bomb"


def rss_mib(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"{key} not in /proc/{pid}/status")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/status")
async def test_64_concurrent_bombs_leave_memory_where_it_was(tmp_path: Path) -> None:
    """A real ``codexlb serve``: 64 zstd bombs of 32 KB (1 GiB each) at once; RSS comes back near where it was.

    Before the fix each refusal kept its decoder's frames (and a cap of output) alive: +1 GB.
    """
    from codexlb.testing.fake_upstream import FakeUpstream
    from tests.core.test_serve import free_port, serve_env, start_server

    bomb = zstd_bomb(1 << 30)
    assert len(bomb) < 33 * 1024
    headers = {"content-type": "application/json", "content-encoding": "zstd"}
    async with FakeUpstream() as fake:
        port = free_port()
        env = serve_env(tmp_path, fake, port, CODEX_LB_PIPELINE__PLUGINS=json.dumps(PIPELINE))
        proc = await start_server(tmp_path, env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                assert (await client.get("/healthz")).status_code == 200
                before = rss_mib(proc.pid)
                answers = await asyncio.gather(*(client.post("/backend-api/codex/responses", content=bomb,
                                                             headers=headers) for _ in range(64)))
                assert {r.status_code for r in answers} == {413}
                assert (await client.get("/healthz")).status_code == 200
                after, peak = rss_mib(proc.pid), rss_mib(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            await proc.wait()
    print(f"64 concurrent zstd bombs: RSS {before} -> {after} MiB (peak {peak} MiB)")
    assert after - before < 200, f"RSS grew from {before} to {after} MiB"
    assert peak - before < 400, f"peak RSS {peak} MiB (from {before} MiB)"


# -- over real sockets -----------------------------------------------------------------------------


async def test_codex_zstd_body_over_sockets(tmp_path: Path) -> None:
    payload = json.loads(FIXTURE.read_text())["body"]
    raw = json.dumps(payload).encode()
    headers = {"content-type": "application/json", "content-encoding": "zstd"}
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        r = await proxy.client.post("/backend-api/codex/responses", content=zstandard.compress(raw), headers=headers)
        assert r.status_code == 200, r.text
        assert "response.completed" in r.text
        sent = proxy.fake.requests[-1]
        assert sent.json == payload and sent.headers.get("content-encoding") is None
        assert (await proxy.client.get("/healthz")).status_code == 200


@pytest.mark.parametrize(("encoding", "body", "status", "code"), [
    ("gzip", gzip_bomb(256 << 20), 413, "payload_too_large"),
    ("zstd", zstd_bomb(256 << 20), 413, "payload_too_large"),
    ("lzma", b"whatever", 415, "unsupported_content_encoding"),
    ("gzip", b"not gzip at all", 400, "invalid_body_encoding"),
])
async def test_refusals_over_sockets(tmp_path: Path, encoding: str | None, body: bytes, status: int,
                                     code: str) -> None:
    headers = {"content-type": "application/json"}
    if encoding:
        headers["content-encoding"] = encoding
    async with proxy_server(tmp_path, pipeline=PIPELINE, max_decompressed_body_bytes=4 << 20) as proxy:
        r = await proxy.client.post("/backend-api/codex/responses", content=body, headers=headers)
        assert r.status_code == status
        error = r.json()["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
        assert not [q for q in proxy.fake.requests if q.endpoint == "responses"]
        assert (await proxy.client.get("/healthz")).status_code == 200


async def raw_post(url: str, head: str, body: bytes) -> tuple[int, dict[str, object]]:
    """Send a request head and ``body`` on a plain socket, stop sending, read the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), json.loads(await reader.readexactly(length))
    finally:
        writer.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_raw_body_over_cap_413(tmp_path: Path, framing: str) -> None:
    """A plain body over the cap: refused from the declared length, or once the cap is passed.

    (A client that keeps uploading after the early answer sees the connection close; the raw
    socket stops sending, as a client honouring an early response would.)
    """
    cap = 64 * 1024
    async with proxy_server(tmp_path, pipeline=PIPELINE, max_decompressed_body_bytes=cap) as proxy:
        path = "/backend-api/codex/responses"
        if framing == "content-length":
            head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" \
                   f"content-length: {cap + 1}\r\n\r\n"
            status, body = await raw_post(proxy.url, head, b"")
        else:
            head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" \
                   "transfer-encoding: chunked\r\n\r\n"
            chunk = b"x" * 4096
            status, body = await raw_post(proxy.url, head, (b"1000\r\n" + chunk + b"\r\n") * (cap // 4096 + 1))
        assert status == 413
        assert body["error"]["code"] == "payload_too_large"  # type: ignore[index]
        assert (await proxy.client.get("/healthz")).status_code == 200
