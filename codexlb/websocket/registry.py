"""The app's open WebSocket sessions, so a shutdown can drain them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codexlb.websocket.session import WebSocketSession


class Connections:
    """Open sessions; :meth:`drain` stops new turns and closes idle connections with 1001."""

    def __init__(self) -> None:
        self.sessions: set[WebSocketSession] = set()
        self.draining = False

    def add(self, session: WebSocketSession) -> None:
        self.sessions.add(session)

    def discard(self, session: WebSocketSession) -> None:
        self.sessions.discard(session)

    def drain(self) -> None:
        """SIGTERM: no new turns; running turns finish (within the grace period), then 1001."""
        self.draining = True
        for session in list(self.sessions):
            session.drain()

    def __len__(self) -> int:
        return len(self.sessions)
