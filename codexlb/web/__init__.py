"""Quart blueprints: the proxy routes, Codex start-up calls, health and admin."""

from __future__ import annotations

from typing import Any

from quart import has_websocket_context, jsonify, request, websocket
from quart.wrappers import BaseRequestWebsocket


def json_error(status: int, code: str, message: str, *, kind: str | None = None,
               headers: dict[str, str] | None = None) -> Any:
    """A Quart answer in OpenAI's ``{"error": {"message", "type", "code"}}`` shape."""
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    return jsonify({"error": {"message": message, "type": kind, "code": code}}), status, headers or {}


def too_large(limit: int) -> str:
    """The message of a 413 for a body over ``limit`` (``deploy/nginx/codexlb.conf`` answers the same)."""
    return f"request body exceeds the limit (CODEX_LB_MAX_DECOMPRESSED_BODY_BYTES = {limit})"


def current_request() -> BaseRequestWebsocket:
    """The request being handled: an HTTP request, or a WebSocket handshake.

    The object itself, not Quart's context-local proxy, so that each attribute read is a plain one.
    """
    proxy: Any = websocket if has_websocket_context() else request
    current: BaseRequestWebsocket = proxy._get_current_object()
    return current
