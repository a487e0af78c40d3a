"""The conversation key of a request, shared by the turns of one conversation.

The first one present:

1. ``prompt_cache_key`` in the body (Codex sets it to the thread id);
2. the ``session-id``, ``thread-id`` headers (Codex 0.169), then the older ``session_id``,
   ``thread_id``, ``conversation_id`` / ``conversation-id``;
3. a BLAKE2b hash of the first input item that is not a system/developer message: Responses
   ``input`` (a string or items) or Chat ``messages``. Items are reduced to ``role`` + text, so a
   chat message and its Responses translation give the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from codexlb import Flow

KEY_HEADERS = ("session-id", "thread-id", "session_id", "thread_id", "conversation_id", "conversation-id")
SYSTEM_ROLES = frozenset({"system", "developer"})


def _text(content: Any) -> str:
    """The text of a message ``content``: a string or a list of parts (non-text parts as JSON)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    out = []
    for part in content:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            out.append(part["text"])
        else:
            out.append(json.dumps(part, sort_keys=True, separators=(",", ":"), default=str))
    return "".join(out)


def first_item_key(payload: Mapping[str, Any]) -> str | None:
    """Hash of the first non-system item of ``input`` (Responses) or ``messages`` (Chat)."""
    items = payload.get("input")
    if items is None:
        items = payload.get("messages")
    if isinstance(items, str):
        canonical = "user\0" + items
    elif isinstance(items, list) and items:
        item = next((i for i in items if not (isinstance(i, Mapping) and i.get("role") in SYSTEM_ROLES)),
                    items[0])
        if isinstance(item, Mapping) and isinstance(item.get("role"), str) and "content" in item:
            canonical = f"{item['role']}\0{_text(item['content'])}"
        else:
            canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str)
    else:
        return None
    if not canonical.strip("\0"):
        return None
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def conversation_key(flow: Flow) -> str | None:
    """The conversation key of ``flow`` (see the module docstring), or ``None``."""
    payload = flow.request.payload or {}
    key = payload.get("prompt_cache_key")
    if isinstance(key, str) and key:
        return key
    headers = flow.request.headers
    for name in KEY_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return first_item_key(payload)
