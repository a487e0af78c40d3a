"""One admission path for every route, installed on the app before any view runs.

Each request (and WebSocket handshake) falls in one of three kinds, by path:

- public: ``/healthz`` and ``/readyz``, answered to anyone, and ``/metrics``, which applies its own
  rule (the metrics plugin: this machine, or the metrics token; client keys do not apply to it);
- admin: ``/api`` and below, behind :func:`codexlb.web.admin_guard.refusal` (this machine only,
  or a signed-in dashboard admin; ``Host``/``Origin`` checked, JSON bodies only);
- dashboard: ``/dashboard`` and below, behind the dashboard's own sign-in
  (:mod:`codexlb.web.dashboard`), never a proxy API key;
- client: every other route, including those plugins register. Its :class:`Flow` is built here and
  ``admit_request`` runs before the view; a refusal is answered (and logged through ``flow_done``)
  without calling the view. Views take the admitted flow with :func:`admitted_flow`.

A request that matches no route (404, 405) is not admitted: the error handler answers it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from quart import Quart, current_app, g

from codexlb.app import lb_of
from codexlb.flow import Flow, ProxyRequest
from codexlb.forwarding import FORWARDING_HEADERS, join_lines
from codexlb.web import current_request
from codexlb.web.admin_guard import refusal
from codexlb.web.respond import to_quart

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
ADMIN_PREFIX = "/api"
DASHBOARD_PREFIX = "/dashboard"
FLOW_KEY = "codexlb_flow"
RouteKind = Literal["public", "admin", "dashboard", "client"]
_FORWARDING = frozenset(FORWARDING_HEADERS)


def route_kind(path: str) -> RouteKind:
    """Which guard a path is behind."""
    if path in PUBLIC_PATHS:
        return "public"
    if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
        return "admin"
    if path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/"):
        return "dashboard"
    return "client"


def request_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header lines as a flow keeps them: names lower-cased, the last line wins, except forwarding
    headers, whose repeated lines are joined into the one list they stand for."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        if name in headers and name in _FORWARDING:
            headers[name] = join_lines((headers[name], value))
        else:
            headers[name] = value
    return headers


def client_flow(method: str, path: str, endpoint: str, headers: Iterable[tuple[str, str]], query: bytes,
                client: Any) -> Flow:
    """A client's flow (body not read yet): headers as :func:`request_headers` keeps them, the
    socket peer (``client``, the scope's) as its address until the firewall decides."""
    peer = str((client or ("127.0.0.1", 0))[0])
    return Flow(ProxyRequest(method=method, path=path, endpoint=endpoint, headers=request_headers(headers),
                             query=query.decode("latin-1"), peer_ip=peer, client_ip=peer))


def make_flow(endpoint: str) -> Flow:
    """A flow for the current request or WebSocket handshake."""
    current = current_request()
    return client_flow(current.method, current.path, endpoint, current.headers.items(), current.query_string,
                       current.scope.get("client"))


async def admit() -> Any:
    """The app's ``before_request``/``before_websocket``: ``None`` lets the view run."""
    current = current_request()
    kind = route_kind(current.path)
    if kind == "admin":
        return await refusal()
    if kind in ("public", "dashboard") or current.url_rule is None:
        return None
    lb = lb_of(current_app)
    flow = make_flow((current.endpoint or "unknown").rsplit(".", 1)[-1])
    result = await lb.pipeline.admit(flow)
    if result is not None:
        return to_quart(lb, flow, result)
    setattr(g, FLOW_KEY, flow)
    return None


def admitted_flow() -> Flow:
    """The flow :func:`admit` let in for this request; a view reached without admission fails."""
    flow: Flow | None = g.get(FLOW_KEY)
    if flow is None:
        raise RuntimeError("a client route ran without admission")
    return flow


def install(app: Quart) -> None:
    """Run :func:`admit` before every request and WebSocket handshake of ``app``."""
    app.before_request(admit)
    app.before_websocket(admit)
