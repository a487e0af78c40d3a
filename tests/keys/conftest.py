"""Helpers for the key tests: a proxy with the api_keys and log_db plugins, keys made through /api/keys."""

from __future__ import annotations

from typing import Any

from codexlb.testing.harness import ProxyHarness
from codexlb.testing.secrets import register_secret
from plugins.api_keys import ApiKeys

PIPELINE = ("firewall", "api_keys", "select_sticky", "select_round_robin", "upstream", "sse_limit", "log_db")
SLOW_SYNC = {"api_keys": {"sync_interval_seconds": 300}}
"""Tests that sync by hand keep the background sync out of the way."""
BODY = {"model": "gpt-5", "input": "hi", "store": False, "stream": True}
PATH = "/backend-api/codex/responses"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def make_key(proxy: ProxyHarness, name: str, **fields: Any) -> str:
    """Create a key through the admin API; returns the key (registered as a secret)."""
    r = await proxy.client.post("/api/keys", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    register_secret(key)
    return key


def plugin(proxy: ProxyHarness) -> ApiKeys:
    found = proxy.lb.pm.get_plugin("api_keys")
    assert isinstance(found, ApiKeys)
    return found
