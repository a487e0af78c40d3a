"""Incremental server-sent-events scanner for a proxy that forwards bytes unchanged and only peeks.

The scanner works on raw bytes as the SSE spec defines them: lines end with ``\\n``, ``\\r\\n``
or ``\\r``; an empty line ends an event; ``:`` lines are comments. Only new bytes are searched
(plus one byte of overlap), so the cost is O(total bytes) whatever the chunking (see
:attr:`SSEScanner.scanned_bytes`). A single event larger than ``max_event_bytes``
raises :class:`SSEEventTooLarge` and its remaining bytes are discarded as they arrive, so memory
stays bounded by the limit plus one chunk.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from codexlb.memo import Learnt

__all__ = [
    "PEEK_TYPES",
    "TERMINAL_TYPES",
    "SSEEvent",
    "SSEEventTooLarge",
    "SSEScanner",
]

PEEK_TYPES: frozenset[str] = frozenset({
    "response.created",
    "response.output_item.done",
    "response.completed",
    "response.failed",
    "response.incomplete",
    "error",
    "codex.rate_limits",
})
"""The event types the proxy needs to look at; pass as ``SSEScanner(types=...)`` to skip the rest."""

TERMINAL_TYPES: frozenset[str] = frozenset({
    "response.completed", "response.failed", "response.incomplete", "error",
})

_LF, _CR, _COLON, _SPACE = 0x0A, 0x0D, 0x3A, 0x20
_TYPE_PREFIX = b'{"type":"'
_NO_JSON = object()


class SSEEventTooLarge(ValueError):
    """One event exceeded the scanner's limit; ``events`` are the other events of the same chunk."""

    def __init__(self, limit: int, events: list[SSEEvent]) -> None:
        super().__init__(f"SSE event larger than {limit} bytes")
        self.limit = limit
        self.events = events


class SSEEvent:
    """One dispatched event: ``event`` (the ``event:`` field), ``data`` (data lines joined by LF), ``raw``."""

    __slots__ = ("event", "data", "raw", "_json")

    def __init__(self, event: str | None, data: bytes, raw: bytes = b"") -> None:
        self.event = event
        self.data = data
        self.raw = raw
        """The event's bytes as received, comments and the closing blank line included."""
        self._json: Any = _NO_JSON

    @property
    def type(self) -> str | None:
        """The event type: the ``event:`` field, else ``"type"`` from the JSON data (parsed only then)."""
        if self.event is not None:
            return self.event
        peeked = _peek_type(self.data, 0, len(self.data))
        if peeked is not None:
            return peeked
        try:
            payload = self.json()
        except ValueError:
            return None
        value = payload.get("type") if isinstance(payload, dict) else None
        return value if isinstance(value, str) else None

    def json(self) -> Any:
        """The data parsed as JSON, cached; raises ``ValueError`` when it is not JSON."""
        if self._json is _NO_JSON:
            self._json = json.loads(self.data)
        return self._json

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return self.event == other.event and self.data == other.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 80 else self.data[:77] + b"..."
        return f"SSEEvent(event={self.event!r}, data={data!r})"


def _peek_type(buf: bytes | bytearray, start: int, end: int) -> str | None:
    """``"type"`` of compact JSON data that starts with ``{"type":"``, without parsing it."""
    if not buf.startswith(_TYPE_PREFIX, start):
        return None
    begin = start + len(_TYPE_PREFIX)
    quote = buf.find(b'"', begin, min(end, begin + 200))
    if quote < 0 or buf.find(b"\\", begin, quote) >= 0:
        return None
    return buf[begin:quote].decode("utf-8", "replace")


_TYPE_SETS: Learnt[frozenset[str], tuple[frozenset[str], frozenset[bytes]]] = Learnt(
    lambda key: (key, frozenset(t.encode() for t in key)), limit=64)


def _type_sets(types: Collection[str]) -> tuple[frozenset[str], frozenset[bytes]]:
    """``types`` as a set of names and of encoded names (made once per distinct set: scanners are per request)."""
    return _TYPE_SETS[types if isinstance(types, frozenset) else frozenset(types)]


class SSEScanner:
    """Feed raw chunks, get the events they complete.

    ``types``, when given, keeps only events of those types; the others are skipped without
    copying or parsing anything (their type is read from the ``event:`` line, or from a
    ``{"type":"...`` data prefix; events whose type cannot be told that way are kept).

    LF-only streams (what the backend sends) take a fast path that finds whole events with one
    ``\\n\\n`` search; once a CR is seen the scanner works line by line for the rest of the stream.
    """

    def __init__(self, max_event_bytes: int, *, types: Collection[str] | None = None) -> None:
        if max_event_bytes <= 0:
            raise ValueError("max_event_bytes must be positive")
        self.max_event_bytes = max_event_bytes
        self._types: frozenset[str] | None = None
        self._type_names: frozenset[bytes] | None = None
        if types is not None:
            self._types, self._type_names = _type_sets(types)
        self._buf = bytearray()
        self._raw_start = 0
        self._event_start = 0
        self._line_start = 0
        self._lines_synced = True
        self._event_name: str | None = None
        self._data: list[tuple[int, int]] = []
        self._skip_lf = False
        self._cr_mode = False
        self._discarding = False
        self._scanned = 0
        self._skipped = b"\n"
        """The first line (with its LF) of the last event skipped for its type (no event starts with LF)."""

    def keep_only(self, types: Collection[str]) -> None:
        """From now on keep only events of ``types`` (as if the scanner had been made with them)."""
        self._types, self._type_names = _type_sets(types)
        self._skipped = b"\n"

    @property
    def scanned_bytes(self) -> int:
        """Bytes examined while searching for event and line ends (at most 2x the bytes fed)."""
        return self._scanned

    @property
    def buffered(self) -> int:
        """Bytes held for an event not finished yet (non-zero at EOF means a truncated event)."""
        return 0 if self._discarding else len(self._buf) - self._event_start

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[SSEEvent]:
        """Scan ``chunk``; return the events it completes, in order."""
        if not chunk:
            return []
        if not self._cr_mode and b"\r" in chunk:
            self._cr_mode = True
        buf = self._buf
        base = len(buf)
        buf += chunk
        events: list[SSEEvent] = []
        if self._cr_mode or self._discarding:
            too_large = self._scan_lines(buf, base, events)
        else:
            too_large = self._scan_blocks(buf, base, events)
        n = len(buf)
        if not self._discarding and n - self._event_start > self.max_event_bytes:
            too_large = True
            self._discarding = True
        self._compact(buf, n)
        if too_large:
            raise SSEEventTooLarge(self.max_event_bytes, events)
        return events

    # -- fast path: LF-only, one search per event ------------------------------------------

    def _scan_blocks(self, buf: bytearray, base: int, events: list[SSEEvent]) -> bool:
        n = len(buf)
        start = self._event_start
        pos = base - 1 if base > start else start
        too_large = False
        scanned = 0
        limit = self.max_event_bytes
        while True:
            while start < n and buf[start] == _LF:  # blank lines between events
                start += 1
            if pos < start:
                pos = start
            blank = buf.find(b"\n\n", pos)
            if blank < 0:
                scanned += n - pos
                break
            end = blank + 2
            scanned += end - pos
            if blank + 1 - start > limit:
                too_large = True
            elif not buf.startswith(self._skipped, start):  # else: the skipped type of the event before
                event = self._block_event(buf, start, blank, end)
                if event is not None:
                    events.append(event)
            start = pos = self._raw_start = end
        self._scanned += scanned
        self._event_start = self._line_start = start
        self._lines_synced = False
        self._event_name = None
        self._data = []
        return too_large

    def _block_event(self, buf: bytearray, start: int, blank: int, end: int) -> SSEEvent | None:
        names = self._type_names
        if names is not None and buf.startswith(b"event:", start):
            first_end = buf.find(b"\n", start, blank + 1)
            value = start + 6
            if value < first_end and buf[value] == _SPACE:
                value += 1
            name = bytes(buf[value:first_end])
            if name and name not in names:
                self._skipped = bytes(buf[start:first_end + 1])
                return None
            if name and buf.startswith(b"data:", first_end + 1) and buf.find(b"\n", first_end + 1, blank) < 0:
                # The common shape, an event line and one data line: no line loop.
                value = first_end + 6
                if value < blank and buf[value] == _SPACE:
                    value += 1
                return SSEEvent(name.decode("utf-8", "replace"), bytes(buf[value:blank]),
                                bytes(buf[self._raw_start:end]))
        event_name: str | None = None
        data: list[bytes] = []
        for line in bytes(buf[start:blank]).split(b"\n"):
            if line[0] == _COLON:
                continue
            colon = line.find(b":")
            if colon < 0:
                field, value_b = line, b""
            else:
                field, value_b = line[:colon], line[colon + 1:]
                if value_b[:1] == b" ":
                    value_b = value_b[1:]
            if field == b"data":
                data.append(value_b)
            elif field == b"event":
                event_name = value_b.decode("utf-8", "replace") or None
        if not data:
            return None
        payload = data[0] if len(data) == 1 else b"\n".join(data)
        if names is not None and event_name is None:
            kind = _peek_type(payload, 0, len(payload))
            if kind is not None and kind not in self._types:  # type: ignore[operator]
                return None
        return SSEEvent(event_name, payload, bytes(buf[self._raw_start:end]))

    # -- general path: line by line (CR, CRLF, discarding) ----------------------------------

    def _scan_lines(self, buf: bytearray, base: int, events: list[SSEEvent]) -> bool:
        n = len(buf)
        i = base if self._lines_synced else self._line_start
        self._lines_synced = True
        if self._skip_lf:
            self._skip_lf = False
            if buf[i] == _LF:
                # The LF of a CRLF split across chunks: not a line of its own. It stays in the next
                # event's ``raw`` (so raws concatenate to the stream) but not in its size.
                i += 1
                if self._event_start == base:
                    self._event_start = i
                self._line_start = i
        too_large = False
        limit = self.max_event_bytes
        ls = self._line_start
        next_lf = next_cr = -1
        scanned = 0
        while True:
            if next_lf < i:
                next_lf = buf.find(b"\n", i)
                scanned += (next_lf + 1 - i) if next_lf >= 0 else n - i
                if next_lf < 0:
                    next_lf = n
            if next_cr < i:
                next_cr = buf.find(b"\r", i) if self._cr_mode else -1
                scanned += (next_cr + 1 - i) if next_cr >= 0 else n - i
                if next_cr < 0:
                    next_cr = n
            eol = next_lf if next_lf < next_cr else next_cr
            if eol >= n:
                break
            nxt = eol + 1
            if eol == next_cr:
                if nxt < n:
                    if buf[nxt] == _LF:
                        nxt += 1
                else:
                    self._skip_lf = True
            if eol == ls:
                if self._discarding:
                    self._discarding = False
                elif self._data:
                    if ls - self._event_start > limit:
                        too_large = True
                    else:
                        event = self._line_event(buf, nxt)
                        if event is not None:
                            events.append(event)
                self._event_name = None
                self._data = []
                self._event_start = self._raw_start = nxt
            elif not self._discarding and buf[ls] != _COLON:
                self._field(buf, ls, eol)
            ls = i = nxt
        self._line_start = ls
        self._scanned += scanned
        return too_large

    def _field(self, buf: bytearray, ls: int, eol: int) -> None:
        colon = buf.find(b":", ls, eol)
        if colon < 0:
            colon = value = eol
        else:
            value = colon + 1
            if value < eol and buf[value] == _SPACE:
                value += 1
        width = colon - ls
        if width == 4 and buf.startswith(b"data", ls):
            self._data.append((value, eol))
        elif width == 5 and buf.startswith(b"event", ls):
            self._event_name = buf[value:eol].decode("utf-8", "replace") or None

    def _line_event(self, buf: bytearray, end: int) -> SSEEvent | None:
        spans = self._data
        name = self._event_name
        if self._types is not None:
            kind = name if name is not None else _peek_type(buf, spans[0][0], spans[0][1])
            if kind is not None and kind not in self._types:
                return None
        if len(spans) == 1:
            data = bytes(buf[spans[0][0]:spans[0][1]])
        else:
            data = b"\n".join(buf[s:e] for s, e in spans)
        return SSEEvent(name, data, bytes(buf[self._raw_start:end]))

    def _compact(self, buf: bytearray, n: int) -> None:
        if self._discarding:
            # Keep one placeholder byte for a partial line so the next line end is not read as blank.
            partial = self._line_start < n if self._lines_synced else buf[n - 1] != _LF
            buf[:] = b"x" if partial else b""
            self._line_start = self._event_start = self._raw_start = 0
            self._lines_synced = True
            self._event_name = None
            self._data = []
            return
        shift = self._raw_start
        if shift:
            del buf[:shift]
            self._line_start -= shift
            self._event_start -= shift
            self._raw_start = 0
            self._data = [(s - shift, e - shift) for s, e in self._data]
