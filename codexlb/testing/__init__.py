"""Helpers for testing codexlb and its plugins: factories and the fake upstream.

``make_flow`` and ``make_account`` build objects with sane defaults; ``FakeUpstream``
(:mod:`codexlb.testing.fake_upstream`) is a real HTTP server faithful to the ChatGPT backend.
"""

from __future__ import annotations

import json
from typing import Any

from codexlb.flow import Flow, ProxyRequest
from codexlb.types import Account, AccountStatus, UsageWindow

__all__ = ["make_account", "make_flow"]


def make_flow(*, path: str = "/backend-api/codex/responses", endpoint: str = "codex_responses",
              method: str = "POST", headers: dict[str, str] | None = None, payload: dict[str, Any] | None = None,
              body: bytes | None = None, client_ip: str = "127.0.0.1") -> Flow:
    """A flow as the pipeline would build it; ``payload`` also sets the raw body."""
    if payload is not None and body is None:
        body = json.dumps(payload).encode()
    headers = {k.lower(): v for k, v in (headers or {"content-type": "application/json"}).items()}
    request = ProxyRequest(method=method, path=path, endpoint=endpoint, headers=headers, peer_ip=client_ip,
                           client_ip=client_ip, body=body, payload=payload)
    return Flow(request)


def make_account(id: str = "a", *, label: str | None = None, status: AccountStatus = AccountStatus.ACTIVE,
                 short_used_pct: float = 0.0, weekly_used_pct: float = 0.0,
                 weekly_remaining_pct: float | None = None, short_resets_at: float | None = None,
                 weekly_resets_at: float | None = None, **kwargs: Any) -> Account:
    """An account with usage windows given as percentages."""
    if weekly_remaining_pct is not None:
        weekly_used_pct = 100.0 - weekly_remaining_pct
    return Account(id=id, label=label or id, status=status,
                   primary=UsageWindow(short_used_pct, 300, short_resets_at),
                   secondary=UsageWindow(weekly_used_pct, 10080, weekly_resets_at), **kwargs)
