"""A small, cheap HTTP/1.1 load client on asyncio protocols (keep-alive, chunked or sized bodies).

Each worker owns one connection and sends one prebuilt request at a time; per request it records
the status, the time to the first body byte and to the last byte, and whether the stream carried
``response.completed``. Cheaper per request than aiohttp's or httpx's client, so the client does not
hide the servers' costs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

MARKER = b"response.completed"
HEAD, SIZE, DATA, LENGTH = range(4)


@dataclass(slots=True)
class Result:
    status: int
    ttfb: float
    ttlb: float
    completed: bool
    error_body: bytes = b""


class Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`send` one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.future: asyncio.Future[Result] | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.future is not None and not self.future.done():
            self.future.set_exception(ConnectionError(f"connection lost: {exc}"))

    def send(self, request: bytes) -> asyncio.Future[Result]:
        assert self.transport is not None
        self.future = asyncio.get_running_loop().create_future()
        self.state, self.status, self.left, self.first = HEAD, 0, 0, 0.0
        self.completed, self.keep_alive, self.tail, self.error_body = False, True, b"", b""
        self.buf.clear()
        self.start = time.perf_counter()
        self.transport.write(request)
        return self.future

    def data_received(self, data: bytes) -> None:  # noqa: C901 - a small state machine
        now = time.perf_counter()
        buf = self.buf
        buf += data
        if self.state == HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head(bytes(buf[:end]))
            del buf[: end + 4]
        if not self.first and buf:
            self.first = now
        if not self.completed:
            self.completed = MARKER in self.tail + data
            self.tail = data[-len(MARKER):]
        if self.status != 200 and len(self.error_body) < 2048:
            self.error_body += bytes(buf[:2048])
        while True:
            if self.state == LENGTH:
                take = min(self.left, len(buf))
                del buf[:take]
                self.left -= take
                if self.left == 0:
                    return self._done(now)
                return
            if self.state == SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";")[0], 16)
                if size == 0:
                    if len(buf) < end + 4:
                        return
                    del buf[: end + 4]
                    return self._done(now)
                del buf[: end + 2]
                self.left, self.state = size + 2, DATA
            if self.state == DATA:
                take = min(self.left, len(buf))
                del buf[:take]
                self.left -= take
                if self.left:
                    return
                self.state = SIZE

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        self.state, self.left = LENGTH, 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value:
                self.state = SIZE
            elif name == b"content-length":
                self.left = int(value)
            elif name == b"connection" and value == b"close":
                self.keep_alive = False

    def _done(self, now: float) -> None:
        if not self.keep_alive and self.transport is not None:
            self.transport.close()
        first = self.first or now
        future, self.future = self.future, None
        if future is not None and not future.done():
            future.set_result(Result(self.status, first - self.start, now - self.start, self.completed,
                                     self.error_body))


async def connect(port: int, host: str = "127.0.0.1") -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


def build_request(path: str, body: Mapping[str, Any], headers: Mapping[str, str], port: int) -> bytes:
    """A complete ``POST`` request as bytes (sent as is, many times)."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             "Accept: text/event-stream", f"Content-Length: {len(payload)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass
class Block:
    """Samples of one load block (one target, one concurrency)."""

    requests: int = 0
    elapsed: float = 0.0
    ttfb: list[float] = field(default_factory=list)
    ttlb: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    first_error: str = ""

    def add(self, other: Block) -> None:
        self.requests += other.requests
        self.elapsed += other.elapsed
        self.ttfb += other.ttfb
        self.ttlb += other.ttlb
        self.statuses.update(other.statuses)
        self.first_error = self.first_error or other.first_error

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "200")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``nan`` for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


async def run_block(port: int, requests: list[bytes], *, duration: float | None = None, count: int | None = None,
                    ramp: int = 64, on_started: Callable[[], None] | None = None) -> Block:
    """Send ``requests[i]`` in a loop on worker ``i``'s connection for ``duration`` s or ``count`` requests each.

    Connections are opened first (``ramp`` at a time) and are not part of the timing.
    """
    conns: list[Connection] = []
    for start in range(0, len(requests), ramp):
        conns += await asyncio.gather(*(connect(port) for _ in requests[start:start + ramp]))
    block = Block()
    begin = time.perf_counter()
    stop_at = begin + duration if duration is not None else float("inf")

    async def worker(index: int) -> None:
        conn, request, done = conns[index], requests[index], 0
        while time.perf_counter() < stop_at and (count is None or done < count):
            if conn.closed:
                conn = await connect(port)
            try:
                result = await conn.send(request)
            except ConnectionError as exc:
                block.statuses["conn_error"] += 1
                block.first_error = block.first_error or str(exc)
                done += 1
                continue
            done += 1
            block.requests += 1
            status = str(result.status) if result.status != 200 or result.completed else "200-incomplete"
            block.statuses[status] += 1
            if status == "200":
                block.ttfb.append(result.ttfb)
                block.ttlb.append(result.ttlb)
            elif not block.first_error:
                block.first_error = f"{status}: {result.error_body[:300]!r}"

    async with asyncio.TaskGroup() as group:
        for index in range(len(conns)):
            group.create_task(worker(index))
        if on_started is not None:
            on_started()
    block.elapsed = time.perf_counter() - begin
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    return block
