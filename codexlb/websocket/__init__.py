"""Codex's ``responses`` transport over WebSocket: frames, the per-connection context, sessions."""

from codexlb.websocket.registry import Connections
from codexlb.websocket.session import ENDPOINT, WebSocketSession

__all__ = ["ENDPOINT", "Connections", "WebSocketSession"]
