"""A connection's conversation context: every input and output item so far, as compact JSON bytes.

Codex chains turns with ``previous_response_id`` and sends only the new items (``store: false``),
so the whole conversation lives here. Each turn's upstream request is rebuilt from it, which is
also what lets a turn move to another account. Items are kept serialised: building a request is
a join of byte strings, and memory is about the size of the conversation's JSON.
"""

from __future__ import annotations

import json
from typing import Any

from codexlb.websocket.frames import LOCAL_FIELDS, FrameError, dumps


class ContextTooLarge(FrameError):
    """The conversation outgrew ``WEBSOCKET_MAX_CONTEXT_BYTES``."""


class Context:
    """Items of one connection's conversation and the response ids that end at each prefix of them."""

    __slots__ = ("items", "size", "limit", "_ends")

    def __init__(self, limit: int) -> None:
        self.items: list[bytes] = []
        self.size = 0
        self.limit = limit
        self._ends: dict[str, int] = {}
        """``response id -> number of items`` of the context that response ended."""

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._ends

    def start_turn(self, previous_response_id: Any, new_items: list[Any]) -> None:
        """Continue from ``previous_response_id`` (or start afresh without one) with ``new_items``.

        :raises FrameError: an unknown ``previous_response_id`` (the upstream's
            ``previous_response_not_found``), or :class:`ContextTooLarge`.
        """
        if previous_response_id is None:
            self._truncate(0)
        elif not isinstance(previous_response_id, str) or previous_response_id not in self._ends:
            raise FrameError(f"Previous response with id '{previous_response_id}' not found.",
                             code="previous_response_not_found", close_code=None)
        else:
            self._truncate(self._ends[previous_response_id])
        self.extend(new_items)

    def extend(self, items: list[Any]) -> None:
        """Append items (JSON values); the bound is checked first, so a refused turn adds nothing."""
        encoded = [dumps(item).encode() for item in items]
        self._grow(encoded)

    def extend_raw(self, items: list[bytes]) -> None:
        self._grow(items)

    def _grow(self, encoded: list[bytes]) -> None:
        added = sum(len(item) + 1 for item in encoded)
        if self.size + added > self.limit:
            raise ContextTooLarge(
                f"conversation context would reach {self.size + added} bytes, above {self.limit} "
                "(CODEX_LB_WEBSOCKET_MAX_CONTEXT_BYTES); open a new connection",
                code="context_too_large", close_code=1009)
        self.items.extend(encoded)
        self.size += added

    def end_response(self, response_id: str) -> None:
        """``response_id`` ends the context as it is now (later turns may chain from it)."""
        self._ends[response_id] = len(self.items)

    def _truncate(self, count: int) -> None:
        if count < len(self.items):
            self.size -= sum(len(item) + 1 for item in self.items[count:])
            del self.items[count:]
        self._ends = {rid: end for rid, end in self._ends.items() if end <= count}

    def request_body(self, frame: dict[str, Any]) -> bytes:
        """The upstream request: the frame's fields (without the transport's) and the whole context."""
        head = {k: v for k, v in frame.items() if k not in LOCAL_FIELDS and k != "input"}
        head["stream"] = True
        return dumps(head)[:-1].encode() + b',"input":[' + b",".join(self.items) + b"]}"


def output_item(event_data: bytes) -> bytes | None:
    """The ``item`` of a ``response.output_item.done`` event, re-serialised compactly."""
    try:
        item = json.loads(event_data).get("item")
    except (ValueError, AttributeError):
        return None
    return dumps(item).encode() if isinstance(item, dict) else None
