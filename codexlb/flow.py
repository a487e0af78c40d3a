"""The Flow: one proxied request on its way through the pipeline, changed in place by each stage."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from codexlb.errors import BadRequest, FlowError
from codexlb.types import Account, TokenUsage

T = TypeVar("T")


def session_key_hash(key: str | None) -> str | None:
    """A short, stable hash of a conversation key: what the request log stores (never the key)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16] if key else None

Body = bytes | AsyncIterator[bytes]


class StashKey(Generic[T]):
    """A typed key for :class:`Stash` (pytest's idea): ``KEY = StashKey[str]()``."""

    __slots__ = ()


class Stash:
    """Per-flow storage for plugins, keyed by :class:`StashKey` objects instead of strings."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], object] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return self._data[key]  # type: ignore[return-value]

    def get(self, key: StashKey[T], default: T | None = None) -> T | None:
        return self._data.get(key, default)  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        return key in self._data


@dataclass(eq=False)
class ProxyRequest:
    """The client's request as the pipeline sees it."""

    method: str
    path: str
    """Request path as received, e.g. ``/backend-api/codex/responses``."""
    endpoint: str
    """Route kind: ``codex_responses``, ``responses``, ``chat_completions``, ``models``, ..."""
    headers: dict[str, str]
    """Lower-cased header names; the last value wins."""
    query: str = ""
    peer_ip: str = "127.0.0.1"
    """The socket peer."""
    client_ip: str = "127.0.0.1"
    """The client as the firewall decided it (the peer, or a trusted X-Forwarded-For hop)."""
    body: bytes | None = None
    """Raw body; ``None`` until admit_request has passed, decoded by decode_request."""
    payload: dict[str, Any] | None = None
    """The parsed JSON body (set by the core after decode_request)."""
    payload_modified: bool = False
    """Set by a plugin that changed ``payload``; otherwise the body is forwarded byte for byte."""

    _serialised: bytes | None = field(default=None, repr=False)

    def forward_body(self) -> bytes:
        """The body to send upstream: the original bytes unless the payload was changed.

        :raises BadRequest: the payload holds text that cannot be UTF-8 (a lone surrogate escape).
        """
        if self.payload is None or not (self.payload_modified or self.body is None):
            return self.body or b""
        if self._serialised is None:
            try:
                self._serialised = json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode()
            except UnicodeEncodeError:
                raise BadRequest("request body contains an unpaired UTF-16 surrogate escape",
                                 code="invalid_json") from None
        return self._serialised

    def set_payload(self, payload: dict[str, Any]) -> None:
        """Replace the payload and mark it for re-serialising."""
        self.payload, self.payload_modified, self._serialised = payload, True, None


@dataclass(eq=False)
class ProxyResponse:
    """An answer for the client: a status, headers and a body of bytes or an async byte stream."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Body = b""

    @property
    def streaming(self) -> bool:
        return not isinstance(self.body, bytes)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @classmethod
    def json(cls, status: int, data: Any, headers: Iterable[tuple[str, str]] = ()) -> ProxyResponse:
        body = json.dumps(data, separators=(",", ":")).encode()
        return cls(status, [("content-type", "application/json"), *headers], body)

    @classmethod
    def error(cls, status: int, code: str, message: str, *, type: str | None = None,
              headers: Iterable[tuple[str, str]] = (), **extra: Any) -> ProxyResponse:
        """An OpenAI-shaped error: ``{"error": {"message", "type", "code", ...}}``."""
        kind = type or ("invalid_request_error" if status < 500 else "server_error")
        return cls.json(status, {"error": {"message": message, "type": kind, "code": code, **extra}},
                        headers)

    @classmethod
    def from_error(cls, exc: FlowError) -> ProxyResponse:
        return cls.json(exc.status, exc.body(), exc.headers.items())


FALLBACK_PREFIX = "fallback-after-"
RETRY_AFTER_401 = "retry-after-401"
"""The core's route reason when an account is tried again after its token was refreshed."""


@dataclass(frozen=True, slots=True)
class Route:
    """How a flow's account was chosen: the strategy and its reason, shown as ``strategy:reason``."""

    strategy: str
    reason: str
    detail: str = ""
    """Words after the reason, e.g. ``from=1a2b3c4d to=5e6f7a8b`` when a conversation moved."""

    @property
    def fallback_after(self) -> str | None:
        """What the flow fell over from (an upstream status or error code), or ``None``."""
        return self.reason[len(FALLBACK_PREFIX):] if self.reason.startswith(FALLBACK_PREFIX) else None

    def __str__(self) -> str:
        text = f"{self.strategy}:{self.reason}"
        return f"{text} {self.detail}" if self.detail else text


def fallback_reason(cause: str | int) -> str:
    """The core's route reason after a failed attempt: ``fallback-after-<status or code>``."""
    return f"{FALLBACK_PREFIX}{cause}"


@dataclass(eq=False)
class Attempt:
    """One try of one account for this flow."""

    account_id: str
    error: FlowError | None = None
    status: int | None = None


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def new_flow_id() -> str:
    """32 hex digits, unique across processes: a random per-process prefix and a counter.

    (``uuid4`` reads the OS's random source for every request: ~2 us.)
    """
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _new_id_prefix() -> None:
    """A forked child draws its own prefix (else parent and child would hand out the same ids)."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=_new_id_prefix)


@dataclass(eq=False)
class Flow:
    """One proxied request. Stages change it in place; setting ``response`` answers at once."""

    request: ProxyRequest
    id: str = field(default_factory=new_flow_id)
    started_at: float = field(default_factory=time.time)
    account: Account | None = None
    """The account serving the flow (the last one tried)."""
    attempts: list[Attempt] = field(default_factory=list)
    response: ProxyResponse | None = None
    """Set by a plugin to answer now; later request stages are skipped."""
    error: FlowError | None = None
    """Why the flow failed, when it did."""
    route: Route | None = None
    """How the account was chosen (``sticky:hit``); set with :meth:`set_route`."""
    upstream_method: str = "POST"
    upstream_path: str = "/codex/responses"
    """Path under ``UPSTREAM_BASE_URL`` that the upstream plugin calls."""
    session_key: str | None = None
    """The conversation key used for stickiness (prompt_cache_key, session-id, ...)."""
    usage: TokenUsage | None = None
    status: int | None = None
    """Status sent to the client."""
    error_code: str | None = None
    first_byte_at: float | None = None
    finished_at: float | None = None
    stash: Stash = field(default_factory=Stash)
    api_key_id: str | None = None
    """The client API key that admitted the flow (its id; recorded in the request log)."""
    api_key_name: str | None = None
    """That key's name (``CODEX_LB_API_KEYS`` for static keys); never the key itself."""
    account_scope: frozenset[str] | None = None
    """Ids of the accounts this flow may be routed to (set by admission; ``None``: any account)."""
    handshake: Flow | None = field(default=None, repr=False)
    """For a WebSocket turn: the admitted handshake of its connection (what the client presented there)."""
    _key_hash: tuple[str, str | None] | None = field(default=None, repr=False)

    @property
    def session_key_hash(self) -> str | None:
        """:func:`session_key_hash` of ``session_key``, computed once (routing and the log both use it)."""
        key = self.session_key
        if key is None:
            return None
        if self._key_hash is None or self._key_hash[0] != key:
            self._key_hash = (key, session_key_hash(key))
        return self._key_hash[1]

    def set_route(self, strategy: str, reason: str, detail: str = "") -> None:
        """Record how this flow is routed (the one way to change :attr:`route`).

        On a retry the core puts its own reason (``fallback-after-429``, ``retry-after-401``) in
        place of the strategy's once the strategy has chosen.
        """
        self.route = Route(strategy, reason, detail)

    def reject(self, status: int, code: str, message: str, **extra: Any) -> None:
        """Answer the client now with an OpenAI-shaped error (an outcome, not an exception)."""
        self.response = ProxyResponse.error(status, code, message, **extra)
        self.error_code = code

    @property
    def model(self) -> str | None:
        payload = self.request.payload
        model = payload.get("model") if payload else None
        return model if isinstance(model, str) else None
