"""The guard of the admin surface (``/api``): one function, run before every admin view.

A request is refused unless all of these hold:

- the socket peer is loopback and no forwarding header names a client (a local reverse proxy
  would make a remote browser look local): 403 ``forbidden``;
- ``Host`` is ``localhost`` or a loopback address (any port), or a name listed in
  ``CODEX_LB_ADMIN_ALLOWED_HOSTS``; this stops DNS rebinding: 403 ``host_not_allowed``;
- ``Origin``, when sent, is this very origin (same scheme, host and port as ``Host``), and
  ``Sec-Fetch-Site``, when sent, is ``same-origin`` or ``none``: 403 ``cross_origin``. Scripts and
  the CLI send neither;
- a ``POST``/``PUT``/``PATCH`` with a body (or any ``Content-Type``) carries
  ``Content-Type: application/json``, so no HTML form or CORS "simple request" with a body can reach
  a JSON route: 415 ``unsupported_media_type``.

A signed-in dashboard admin (a valid session cookie, see :mod:`codexlb.web.dashboard.session`)
may instead call from anywhere the dashboard is served: the ``Origin``/``Sec-Fetch-Site`` and JSON
rules still hold, and every state-changing request must carry the session's CSRF token in
``X-CSRF-Token`` (403 ``csrf_failed``). An API-key holder's session never counts here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from quart import current_app

from codexlb.app import lb_of
from codexlb.forwarding import from_this_machine, is_loopback
from codexlb.web import current_request, json_error

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _forbidden(code: str, message: str) -> Any:
    return json_error(403, code, message, kind="permission_error")


def split_host(value: str, scheme: str) -> tuple[str, int] | None:
    """``(hostname, port)`` of a ``Host`` value (port defaulted from ``scheme``); ``None`` if invalid."""
    if not value or any(c in value for c in "/?#@\\ "):
        return None
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port or DEFAULT_PORTS.get(scheme, 80)


def host_allowed(hostname: str, extra: tuple[str, ...]) -> bool:
    """Whether ``hostname`` is a loopback name or one of ``extra`` (case-insensitive)."""
    if hostname == "localhost" or is_loopback(hostname):
        return True
    return hostname in {name.lower() for name in extra}


def _origin_ok(origin: str, scheme: str, host: tuple[str, int]) -> bool:
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme.lower() != scheme or not parts.hostname or parts.path or parts.query:
        return False
    return (parts.hostname.lower(), port or DEFAULT_PORTS.get(scheme, 80)) == host


def local_refusal(what: str = "the /api admin routes") -> Any | None:
    """Refuse a request that is not from this machine (peer, forwarding headers, ``Host``)."""
    current = current_request()
    client = current.scope.get("client")
    if not from_this_machine(str(client[0]) if client else None, current.headers):
        return _forbidden("forbidden", f"{what} answer only clients on this machine "
                          "(127.0.0.1 or ::1), not through a reverse proxy")
    extra = lb_of(current_app).settings.admin_allowed_hosts
    host = split_host(current.headers.get("host", ""), current.scheme)
    if host is None or not host_allowed(host[0], extra):
        return _forbidden("host_not_allowed", f"{what} answer only requests for localhost, "
                          "127.0.0.1 or [::1] (or a name in CODEX_LB_ADMIN_ALLOWED_HOSTS), "
                          f"not Host {current.headers.get('host', '')[:100]!r}")
    return None


async def refusal() -> Any | None:
    """An error answer for a request the admin surface must not serve, else ``None``."""
    from codexlb.web.dashboard.session import csrf_sent, current_session, tokens_match

    current = current_request()
    session = await current_session() if current.path.startswith("/api") else None
    if session is not None and session.kind == "admin":
        if current.method not in ("GET", "HEAD", "OPTIONS") and not tokens_match(session.csrf_token,
                                                                                  await csrf_sent()):
            return _forbidden("csrf_failed", "a signed-in dashboard request that changes state must send "
                              "the session's CSRF token in X-CSRF-Token")
    else:
        refused = local_refusal()
        if refused is not None:
            return refused
    scheme = current.scheme
    host = split_host(current.headers.get("host", ""), scheme)
    if host is None:
        return _forbidden("host_not_allowed", "the request has no valid Host header")
    origin = current.headers.get("origin")
    site = current.headers.get("sec-fetch-site", "").strip().lower()
    if (origin is not None and not _origin_ok(origin, scheme, host)) or site not in ("", "same-origin", "none"):
        return _forbidden("cross_origin", "the /api admin routes refuse cross-origin requests "
                          "(Origin must be this server's own origin)")
    has_body = bool(current.content_length) or "transfer-encoding" in current.headers \
        or "content-type" in current.headers
    if current.method in BODY_METHODS and has_body and not _is_json(current.mimetype):
        return json_error(415, "unsupported_media_type", "the /api admin routes take JSON bodies only: "
                          f"send Content-Type: application/json, not {current.mimetype or 'none'!r}")
    return None


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))
