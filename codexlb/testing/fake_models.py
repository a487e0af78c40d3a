"""Model catalog served by the fake's ``GET /backend-api/codex/models`` (protocol.md §4)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

ALL_PLANS = ["free", "go", "plus", "pro", "team", "business", "enterprise", "edu"]
PAID_PLANS = ["plus", "pro", "team", "business", "enterprise", "edu"]

_LEVELS = [
    {"effort": "low", "description": "Fast responses with lighter reasoning"},
    {"effort": "medium", "description": "Balances speed and reasoning depth for everyday tasks"},
    {"effort": "high", "description": "Greater reasoning depth for complex problems"},
    {"effort": "xhigh", "description": "Extra high reasoning depth for complex problems"},
]

# (slug, display name, minimal client version, plans, priority, extra fields)
_CATALOG: list[tuple[str, str, str, list[str], int, dict[str, Any]]] = [
    ("gpt-5.6-sol", "GPT-5.6-Sol", "0.142.2", PAID_PLANS, 1,
     {"use_responses_lite": True, "prefer_websockets": True, "tool_mode": "code_mode_only"}),
    ("gpt-5.5", "GPT-5.5", "0.120.0", ALL_PLANS, 2, {}),
    ("gpt-5.4", "GPT-5.4", "0.100.0", ALL_PLANS, 3, {}),
    ("gpt-5.3-codex", "GPT-5.3-Codex", "0.90.0", ["pro", "business", "enterprise"], 4, {}),
    ("gpt-5.1-codex-mini", "GPT-5.1-Codex-Mini", "0.50.0", ALL_PLANS, 5, {"context_window": 272000}),
]


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def model_entry(slug: str, name: str, min_version: str, plans: list[str], priority: int,
                extra: dict[str, Any]) -> dict[str, Any]:
    """One catalog entry shaped like the backend's ModelInfo."""
    entry: dict[str, Any] = {
        "slug": slug,
        "display_name": name,
        "description": f"{name} (fake upstream).",
        "default_reasoning_level": "medium",
        "supported_reasoning_levels": _LEVELS,
        "shell_type": "shell_command",
        "visibility": "list",
        "minimal_client_version": min_version,
        "supported_in_api": True,
        "priority": priority,
        "upgrade": None,
        "base_instructions": "You are Codex, a coding agent.",
        "prefer_websockets": False,
        "supports_reasoning_summaries": True,
        "reasoning_summary_format": "experimental",
        "default_reasoning_summary": "none",
        "support_verbosity": True,
        "default_verbosity": "low",
        "apply_patch_tool_type": "freeform",
        "web_search_tool_type": "text_and_image",
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "supports_parallel_tool_calls": True,
        "context_window": 372000,
        "max_context_window": 372000,
        "effective_context_window_percent": 95,
        "auto_compact_token_limit": None,
        "experimental_supported_tools": [],
        "input_modalities": ["text", "image"],
        "available_in_plans": plans,
        "service_tiers": [{"id": "priority", "name": "Fast", "description": "1.5x speed, increased usage"}],
    }
    entry.update(extra)
    return entry


def catalog_for(plan_type: str, client_version: str | None) -> list[dict[str, Any]]:
    """Entries available on ``plan_type`` whose ``minimal_client_version`` <= ``client_version``."""
    wanted = _version(client_version) if client_version else None
    return [
        model_entry(*row)
        for row in _CATALOG
        if plan_type in row[3] and (wanted is None or _version(row[2]) <= wanted)
    ]


def supported_slugs(plan_type: str) -> set[str]:
    """Slugs usable on ``plan_type`` (regardless of client version)."""
    return {row[0] for row in _CATALOG if plan_type in row[3]}


def catalog_etag(models: list[dict[str, Any]]) -> str:
    """Weak ETag for a catalog body."""
    digest = hashlib.sha256(json.dumps(models, sort_keys=True).encode()).hexdigest()[:16]
    return f'W/"{digest}"'
