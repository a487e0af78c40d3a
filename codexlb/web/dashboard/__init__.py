"""The web dashboard under ``/dashboard/``: server-rendered pages over the same services as ``/api``.

Who may see it (checked before every view by :func:`guard`):

- no password set (``codexlb dashboard set-password``): only this machine (loopback peer, no
  forwarding headers, a loopback ``Host``), and every page says how to set one;
- a password set: a signed-in admin session; an API-key holder's session (signed in with the key
  at ``/dashboard/my/login``) opens only "My usage", and ends when its key is revoked, rotated or
  expires.

Every ``POST`` carries the CSRF token of the session (form field or ``X-CSRF-Token``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from quart import Blueprint, Quart, current_app, g, redirect, render_template, request, url_for

from codexlb.app import lb_of
from codexlb.db.dashboard_auth import end_session, password_hash
from codexlb.web.admin_guard import local_refusal
from codexlb.web.dashboard import formatting
from codexlb.web.dashboard.session import (
    SAFE_METHODS,
    csrf_sent,
    current_session,
    install_auth,
    live_key,
    local_csrf_token,
    sign_out,
    tokens_match,
)

blueprint = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
                      static_folder="static", static_url_path="/static")
LOGIN_ENDPOINTS = frozenset({"dashboard.login", "dashboard.login_post", "dashboard.key_login",
                             "dashboard.key_login_post"})
KEY_ENDPOINTS = frozenset({"dashboard.my_usage", "dashboard.logout"})
_CONTEXT = "codexlb_dashboard_viewer"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: ``local`` (no password set, this machine), ``admin``, or ``key``."""

    kind: str
    csrf_token: str
    subject: str | None = None
    session_id_hash: str | None = None


def viewer() -> Viewer:
    found: Viewer | None = g.get(_CONTEXT)
    if found is None:
        raise RuntimeError("a dashboard view ran without the guard")
    return found


async def page(template: str, status: int = 200, **values: Any) -> Any:
    """Render a dashboard template with the viewer, CSRF token and formatting helpers."""
    values.setdefault("csrf_token", getattr(g.get(_CONTEXT), "csrf_token", ""))
    return await render_template(f"dashboard/{template}", viewer=g.get(_CONTEXT), **values), status


@blueprint.before_request
async def guard() -> Any:
    endpoint = request.endpoint or ""
    if endpoint == "dashboard.static":
        return None
    lb = lb_of(current_app)
    if lb.sessionmaker is None or lb.store is None:
        return await page("message.html", 503, title="Not ready",
                          message="The database is not open yet; see /readyz.")
    if await password_hash(lb.sessionmaker) is None:
        if local_refusal("the dashboard (no password is set yet)") is not None:
            return await page("message.html", 403, title="Set a password first", setup=True,
                              message="With no password set, the dashboard answers only on this machine "
                              "(http://127.0.0.1). Set one with `codexlb dashboard set-password`.")
        if endpoint in LOGIN_ENDPOINTS:
            return redirect(url_for("dashboard.overview"), 303)
        setattr(g, _CONTEXT, Viewer("local", await local_csrf_token()))
    elif endpoint not in LOGIN_ENDPOINTS:
        session = await current_session()
        if session is not None and session.kind == "key" and await live_key(session) is None:
            await end_session(lb.sessionmaker, session.id_hash)  # its key was revoked, rotated or expired
            sign_out()
            session = None
        if session is None:
            if endpoint == "dashboard.my_usage" and request.method in SAFE_METHODS:
                return redirect(url_for("dashboard.key_login"))
            if request.method in SAFE_METHODS:
                return redirect(url_for("dashboard.login") + "?next=" + quote(request.full_path.rstrip("?")))
            return await page("message.html", 401, title="Signed out", message="Sign in again.")
        if session.kind != "admin" and endpoint not in KEY_ENDPOINTS:
            return await page("message.html", 403, title="Not allowed",
                              message="An API key opens only its own usage page.")
        setattr(g, _CONTEXT, Viewer(session.kind, session.csrf_token, session.subject, session.id_hash))
    if request.method not in SAFE_METHODS:
        expected = await local_csrf_token() if endpoint in LOGIN_ENDPOINTS else viewer().csrf_token
        if not tokens_match(expected, await csrf_sent()):
            return await page("message.html", 403, title="Refused",
                              message="The form's security token is missing or out of date; reload the page.")
    return None


def install(app: Quart) -> None:
    """Add the dashboard to ``app`` (unless ``CODEX_LB_DASHBOARD_ENABLED`` is off)."""
    if not lb_of(app).settings.dashboard_enabled:
        return
    from codexlb.web.dashboard import accounts, keys, login, my_usage, pages, requests  # noqa: F401  (routes)

    install_auth(app)
    app.register_blueprint(blueprint)
    app.jinja_env.filters.update(formatting.FILTERS)

    @app.get("/dashboard")
    async def dashboard_root() -> Any:
        return redirect(url_for("dashboard.overview"))
