"""Who is signed in to the dashboard: the session cookie (quart-auth), CSRF tokens, sign-in throttling.

The cookie holds a signed random session id; the session itself (kind, CSRF token, expiry) lives in
the database (:mod:`codexlb.db.dashboard_auth`), so signing out or changing the password ends it
everywhere. The cookie is ``HttpOnly``, ``SameSite=Lax``, and ``Secure`` when the request came over
https, directly or through a trusted TLS proxy (``X-Forwarded-Proto`` from a peer in
``CODEX_LB_FIREWALL_TRUSTED_PROXY_CIDRS`` with ``CODEX_LB_FIREWALL_TRUST_PROXY_HEADERS`` on).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
import warnings
from typing import TYPE_CHECKING, Any

from quart import Quart, Response, current_app, g, request
from quart_auth import Action, AuthUser, QuartAuth, current_user

from codexlb.app import lb_of
from codexlb.db.dashboard_auth import cookie_secret, load_session
from codexlb.forwarding import forwarded_for_chain, forwarded_proto, parse_node
from codexlb.keys.store import KeyNotFound, KeyStore
from codexlb.web import current_request

if TYPE_CHECKING:
    from codexlb.db.dashboard_auth import DashboardSession
    from codexlb.keys.store import ApiKey

COOKIE_NAME = "codexlb_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SESSION = "codexlb_dashboard_session"
_KEY = "codexlb_dashboard_key"
_LOCAL_CSRF_CONTEXT = b"codexlb-dashboard-local-csrf"


class DashboardAuth(QuartAuth):
    """quart-auth with the ``Secure`` flag decided per request (https, or a trusted TLS proxy)."""

    async def after_request(self, response: Response) -> Response:
        if g.get(self.attribute_name) is None:  # no user looked at (every proxied request): nothing to write
            return response
        if self.load_user().action is Action.PASS:  # signed in before, nothing changed: no cookie to write
            return response
        self.cookie_secure = request_is_secure()
        with warnings.catch_warnings():
            # quart-auth warns about a Secure cookie on a request it sees as http; behind a TLS
            # proxy that is the intended case (the browser talks https to the proxy).
            warnings.simplefilter("ignore", UserWarning)
            return await super().after_request(response)


def install_auth(app: Quart) -> None:
    settings = lb_of(app).settings
    DashboardAuth(app, cookie_name=COOKIE_NAME, cookie_samesite="Lax", cookie_http_only=True,
                  duration=int(settings.dashboard_session_hours * 3600), salt="codexlb-dashboard")
    app.extensions["codexlb_login_limiter"] = LoginThrottle(settings.dashboard_login_attempts)


def _trusted_peer() -> bool:
    settings = lb_of(current_app).settings
    client = request.scope.get("client")
    peer = parse_node(str(client[0])) if client else None
    if peer is None or not settings.firewall_trust_proxy_headers:
        return False
    for cidr in settings.firewall_trusted_proxy_cidrs:
        try:
            if peer in ipaddress.ip_network(cidr.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def request_is_secure() -> bool:
    """https to this server, or https to a trusted proxy in front of it."""
    return request.scheme == "https" or (_trusted_peer() and forwarded_proto(request.headers) == "https")


def client_address() -> str:
    """The client for sign-in throttling: the peer, or the nearest hop a trusted proxy names."""
    client = request.scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if _trusted_peer():
        hops = forwarded_for_chain(request.headers)
        if hops:
            return hops[-1]
    return peer


async def _ensure_secret() -> bool:
    lb = lb_of(current_app)
    if lb.sessionmaker is None or lb.store is None:
        return False
    if not current_app.secret_key:
        current_app.secret_key = await cookie_secret(lb.sessionmaker)
    return True


async def current_session() -> DashboardSession | None:
    """The live session of this request's cookie, or ``None``."""
    if _SESSION in g:
        cached: DashboardSession | None = g.get(_SESSION)
        return cached
    found = None
    if ("QUART_AUTH" in current_app.extensions and COOKIE_NAME in current_request().cookies
            and await _ensure_secret()):
        auth_id = current_user.auth_id
        lb = lb_of(current_app)
        if auth_id and lb.sessionmaker is not None:
            found = await load_session(lb.sessionmaker, auth_id)
    setattr(g, _SESSION, found)
    return found


async def live_key(session: DashboardSession) -> ApiKey | None:
    """The API key of a ``key`` session while it still opens "My usage", else ``None``.

    A key that was revoked, expired, removed or rotated after the session began ends the session.
    """
    if _KEY in g:
        cached: ApiKey | None = g.get(_KEY)
        return cached
    lb = lb_of(current_app)
    key = None
    if session.kind == "key" and session.subject and lb.sessionmaker is not None:
        try:
            key = await KeyStore(lb.sessionmaker).get(session.subject)
        except KeyNotFound:
            key = None
        if key is not None and (key.id != session.subject or key.state() != "active"
                                or (key.rotated_at is not None and key.rotated_at >= session.created_at)):
            key = None
    setattr(g, _KEY, key)
    return key


async def sign_in(session_id: str) -> None:
    """Write the cookie for ``session_id`` on this request's answer."""
    from quart_auth import login_user

    await _ensure_secret()
    login_user(AuthUser(session_id))


def sign_out() -> None:
    from quart_auth import logout_user

    logout_user()


async def local_csrf_token() -> str:
    """The form token when no password is set (loopback only): an HMAC of the cookie key."""
    await _ensure_secret()
    key = current_app.secret_key
    secret = key.encode() if isinstance(key, str) else bytes(key or b"")
    return hmac.new(secret, _LOCAL_CSRF_CONTEXT, "sha256").hexdigest()


async def csrf_sent() -> str:
    """The CSRF token the request carries (header, else form field)."""
    token = request.headers.get(CSRF_HEADER)
    if token:
        return token
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form
        return str(form.get(CSRF_FIELD, ""))
    return ""


def tokens_match(expected: str, sent: str) -> bool:
    return bool(expected) and hmac.compare_digest(expected.encode(), sent.encode())


class LoginThrottle:
    """At most ``attempts`` failed sign-ins per client per 15 minutes (a moving window).

    The ``limits`` package is imported at the first sign-in, not by a serving proxy.
    """

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self._state: tuple[Any, Any] | None = None

    def _limiter(self) -> tuple[Any, Any]:
        if self._state is None:
            from limits import parse
            from limits.storage import MemoryStorage
            from limits.strategies import MovingWindowRateLimiter

            self._state = parse(f"{self.attempts}/15 minutes"), MovingWindowRateLimiter(MemoryStorage())
        return self._state

    def retry_after(self, client: str) -> int:
        """Seconds the client must wait before trying again (0: may try now)."""
        item, limiter = self._limiter()
        if limiter.test(item, client):
            return 0
        reset, _ = limiter.get_window_stats(item, client)
        return max(1, int(reset - time.time()) + 1)

    def failed(self, client: str) -> None:
        item, limiter = self._limiter()
        limiter.hit(item, client)


def throttle() -> LoginThrottle:
    limiter: LoginThrottle = current_app.extensions["codexlb_login_limiter"]
    return limiter


def template_globals() -> dict[str, Any]:
    return {"csrf_field": CSRF_FIELD}
