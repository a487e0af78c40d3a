"""Strategy: keep each conversation on one account so the upstream prompt cache stays warm.

Hooks: ``configure``, ``select_account``.

Conversation key (the first one present; stored raw in ``flow.session_key``):

1. ``prompt_cache_key`` in the body (Codex sets it to the thread id);
2. the ``session-id``, ``thread-id`` headers (Codex 0.169), then the older ``session_id``,
   ``thread_id``, ``conversation_id`` / ``conversation-id``;
3. a BLAKE2b hash of the first input item that is not a system/developer message: Responses
   ``input`` (a string or items) or Chat ``messages``. Items are reduced to ``role`` + text, so a
   chat message and its Responses translation give the same key.

The account is chosen by rendezvous (highest-random-weight) hashing: every account gets the score
``blake2b(account.id + "\\0" + key)`` (8 bytes), the highest usable one wins. The hash is stable
across processes, so every replica picks the same account, and an account leaving the pool moves
only the conversations it owned, each to its next account in rendezvous order.

Route reasons:

- ``sticky:hit``: the conversation is on its home account (the top of the ranking over every
  pooled account, usable or not);
- ``sticky:moved``: the home account is unusable (cooling down, paused, ...), the next usable
  account in rendezvous order serves it;
- ``sticky:moved-low-quota``: the home account is usable, but its short or weekly remaining quota
  is below ``min_remaining_pct``, so the conversation moves before it hits the wall;
- no key: returns ``None`` (``flow.route`` is set to ``sticky:no-key`` when still empty) and the
  next strategy decides. On a retry of the same flow the core's ``fallback-after-<status>`` /
  ``retry-after-401`` reason is kept.

When every candidate is below ``min_remaining_pct`` the plain ranking is used (moving would not
help; the upstream's 429 makes the core fail over).

Settings table ``[plugins.select_sticky]``:

- ``min_remaining_pct`` (float 0..100, default 2.0): an account whose short or weekly remaining
  quota is below this does not take sticky traffic while another candidate has more; 0 turns it
  off. Remaining is ``select_least_used.effective_remaining`` with its default ramp: a window
  that resets within 5 minutes counts as (nearly) full, one already past its reset as full.
- ``weight_by_quota`` (bool, default false): weighted rendezvous (``-w / ln(u)``) with ``w`` the
  account's remaining quota in 10-point steps (1..10), so new conversations favour fuller
  accounts. Conversations then also move when an account's weight changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from codexlb import Account, ConfigError, Flow, hookimpl
from plugins.select_least_used import effective_remaining, set_route

if TYPE_CHECKING:
    from codexlb.app import CodexLB

NAME = "sticky"
KEY_HEADERS = ("session-id", "thread-id", "session_id", "thread_id", "conversation_id", "conversation-id")
SYSTEM_ROLES = frozenset({"system", "developer"})
OPTIONS = ("min_remaining_pct", "weight_by_quota")
_TWO_52 = float(1 << 52)
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


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


class SelectSticky:
    """Rendezvous-hashes conversation keys onto accounts; see the module docstring."""

    def __init__(self) -> None:
        self.min_remaining_pct = 2.0
        self.weight_by_quota = False
        self._prefixes: dict[str, Any] = {}

    @hookimpl
    def configure(self, config: Mapping[str, Any]) -> None:
        unknown = sorted(set(config) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"[plugins.select_sticky] unknown option(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(OPTIONS)}")
        value = config.get("min_remaining_pct", self.min_remaining_pct)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            raise ConfigError(f"[plugins.select_sticky] min_remaining_pct: invalid value {value!r}; "
                              "allowed: a number in 0..100")
        self.min_remaining_pct = float(value)
        flag = config.get("weight_by_quota", self.weight_by_quota)
        if isinstance(flag, str) and flag.strip().lower() in _TRUE | _FALSE:
            flag = flag.strip().lower() in _TRUE
        if not isinstance(flag, bool):
            raise ConfigError(f"[plugins.select_sticky] weight_by_quota: invalid value {flag!r}; "
                              "allowed: true or false")
        self.weight_by_quota = flag

    # -- ranking -------------------------------------------------------------------------

    def _prefix(self, account_id: str) -> Any:
        """The BLAKE2b state after ``account_id + "\\0"``, computed once per account."""
        if len(self._prefixes) > 4096:  # accounts come and go; never grow without bound
            self._prefixes.clear()
        prefix = self._prefixes[account_id] = hashlib.blake2b(account_id.encode() + b"\0", digest_size=8)
        return prefix

    def _hash(self, account_id: str, key: bytes) -> int:
        h = (self._prefixes.get(account_id) or self._prefix(account_id)).copy()
        h.update(key)
        return int.from_bytes(h.digest(), "big")

    def _rank(self, account: Account, key: bytes, now: float) -> float:
        """Rendezvous score of ``account`` for ``key`` (higher wins)."""
        h = self._hash(account.id, key)
        if not self.weight_by_quota:
            return h
        weight = max(1, math.ceil(self._remaining(account, now) / 10.0))
        return weight / -math.log(((h >> 12) + 0.5) / _TWO_52)  # u in (0, 1), exact in a double

    @staticmethod
    def _remaining(account: Account, now: float) -> float:
        short = effective_remaining(account.primary, now)
        weekly = effective_remaining(account.secondary, now)
        return short if short < weekly else weekly

    # -- hook ----------------------------------------------------------------------------

    @hookimpl
    async def select_account(self, flow: Flow, candidates: Sequence[Account],
                             app: CodexLB | None) -> Account | None:
        key = conversation_key(flow)
        if key is None:
            if not flow.route:
                flow.route = f"{NAME}:no-key"
            return None
        flow.session_key = key
        if not candidates:
            return None
        raw, now, floor = key.encode("utf-8", "surrogatepass"), time.time(), self.min_remaining_pct
        weighted, prefixes, from_bytes = self.weight_by_quota, self._prefixes, int.from_bytes
        best = best_ok = None
        best_rank = best_ok_rank = -1.0
        for account in candidates:
            if weighted:
                rank = self._rank(account, raw, now)
            else:  # the hot path, inlined
                h = (prefixes.get(account.id) or self._prefix(account.id)).copy()
                h.update(raw)
                rank = from_bytes(h.digest(), "big")
            if rank > best_rank:
                best, best_rank = account, rank
            if rank > best_ok_rank and (floor <= 0 or self._remaining(account, now) >= floor):
                best_ok, best_ok_rank = account, rank
        assert best is not None
        home_usable = self._is_home(best, best_rank, candidates, app, flow, raw, now)
        if best_ok is None or best_ok is best:
            set_route(flow, NAME, "hit" if home_usable else "moved")
            return best
        set_route(flow, NAME, "moved-low-quota" if home_usable else "moved")
        return best_ok

    def _is_home(self, best: Account, best_rank: float, candidates: Sequence[Account], app: CodexLB | None,
                 flow: Flow, key: bytes, now: float) -> bool:
        """Whether ``best`` (top candidate) also tops every pooled account, usable or not."""
        if app is not None:
            if len(app.pool.accounts) == len(candidates):
                return True
            ids = {a.id for a in candidates}
            others: list[Account] = [a for a in app.pool.accounts.values() if a.id not in ids]
            return all(self._rank(a, key, now) < best_rank for a in others)
        # without an app (unit tests): the accounts this flow already tried
        if self.weight_by_quota:
            return not flow.attempts
        return all(self._hash(a.account_id, key) < best_rank for a in flow.attempts)
