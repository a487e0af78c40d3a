"""``GET /backend-api/codex/responses`` upgraded to a WebSocket: Codex's ``responses`` transport.

The handshake is admitted like every client route (:mod:`codexlb.web.admission`: allowlist,
keys) before this view runs; a refusal is an HTTP answer instead of the upgrade. An admitted
client gets the socket, and a :class:`~codexlb.websocket.WebSocketSession` serves its turns.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, current_app, websocket

from codexlb.app import lb_of
from codexlb.web.admission import admitted_flow
from codexlb.websocket import WebSocketSession

blueprint = Blueprint("codex_websocket", __name__)


@blueprint.websocket("/backend-api/codex/responses")
async def responses_websocket() -> Any:
    """Accept the upgrade and serve ``response.create`` turns until the socket closes."""
    lb = lb_of(current_app)
    flow = admitted_flow()
    await websocket.accept()
    socket = websocket._get_current_object()  # type: ignore[attr-defined]  # usable from the reader task
    await WebSocketSession(lb, socket, flow, lb.websockets).run()
