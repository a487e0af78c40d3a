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

Once a conversation has moved, it is pinned to its new account (an in-memory LRU of
``max_pins`` keys; route ``sticky:moved``) and stays there while that account is usable, even after its home account
recovers: going back would cost the prompt cache a second time. Placement before any move is the
same on every replica; a pin is local to the replica that made the move (replicas that saw the
same exhaustion move the conversation to the same next account anyway).

Settings table ``[plugins.select_sticky]``:

- ``min_remaining_pct`` (float 0..100, default 2.0): an account whose short or weekly remaining
  quota is below this does not take sticky traffic while another candidate has more; 0 turns it
  off. Remaining is ``select_least_used.effective_remaining`` with its default ramp: a window
  that resets within 5 minutes counts as (nearly) full, one already past its reset as full.
- ``weight_by_quota`` (bool, default false): weighted rendezvous (``-w / ln(u)``) with ``w`` the
  account's remaining quota in 10-point steps (1..10), so new conversations favour fuller
  accounts. Conversations then also move when an account's weight changes.
- ``max_pins`` (int, default 100000): conversations remembered after a move (0: never pin, so a
  conversation returns to its home account as soon as that is usable again).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from codexlb import Account, ConfigError, Flow, hookimpl
from plugins.select_least_used import effective_remaining, set_route

if TYPE_CHECKING:
    from codexlb.app import CodexLB

NAME = "sticky"
KEY_HEADERS = ("session-id", "thread-id", "session_id", "thread_id", "conversation_id", "conversation-id")
SYSTEM_ROLES = frozenset({"system", "developer"})
OPTIONS = ("min_remaining_pct", "weight_by_quota", "max_pins")
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
        self.max_pins = 100_000
        self._prefixes: dict[str, Any] = {}
        self._pins: OrderedDict[str, str] = OrderedDict()

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
        pins = config.get("max_pins", self.max_pins)
        if isinstance(pins, bool) or not isinstance(pins, int) or pins < 0:
            raise ConfigError(f"[plugins.select_sticky] max_pins: invalid value {pins!r}; allowed: a whole number >= 0")
        self.max_pins = pins

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
        pinned = self._pinned(key, candidates)
        if pinned is not None:
            set_route(flow, NAME, "moved")
            return pinned
        chosen, home = self._choose(flow, key, candidates, app)
        if home:
            self._pins.pop(key, None)
        else:
            self._pin(key, chosen.id)
        return chosen

    def _pinned(self, key: str, candidates: Sequence[Account]) -> Account | None:
        """The account this conversation moved to earlier, while it is a usable candidate with quota."""
        account_id = self._pins.get(key)
        if account_id is None:
            return None
        account = next((a for a in candidates if a.id == account_id), None)
        if account is None:
            return None
        floor = self.min_remaining_pct
        if floor > 0 and self._remaining(account, time.time()) < floor:
            if any(self._remaining(a, time.time()) >= floor for a in candidates):
                return None
        self._pins.move_to_end(key)
        return account

    def _pin(self, key: str, account_id: str) -> None:
        if self.max_pins <= 0:
            return
        self._pins[key] = account_id
        self._pins.move_to_end(key)
        while len(self._pins) > self.max_pins:
            self._pins.popitem(last=False)

    def _choose(self, flow: Flow, key: str, candidates: Sequence[Account],
                app: CodexLB | None) -> tuple[Account, bool]:
        """The rendezvous choice, and whether it is the conversation's home account."""
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
            return best, home_usable
        set_route(flow, NAME, "moved-low-quota" if home_usable else "moved")
        return best_ok, False

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
