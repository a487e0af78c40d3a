"""Sign in (password, then a TOTP code when enabled) and sign out; failed sign-ins are throttled."""

from __future__ import annotations

from typing import Any

from quart import current_app, redirect, request, url_for

from codexlb.app import lb_of
from codexlb.db.dashboard_auth import create_session, end_session, password_hash, totp_secret, verify_password
from codexlb.web.dashboard import blueprint, page, viewer
from codexlb.web.dashboard.session import client_address, local_csrf_token, sign_in, sign_out, throttle


def _next_url(value: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if value and value.startswith("/dashboard/") and not value.startswith("//") and "\\" not in value:
        return value
    return url_for("dashboard.overview")


async def _totp_enabled() -> bool:
    lb = lb_of(current_app)
    assert lb.sessionmaker is not None and lb.cipher is not None
    return await totp_secret(lb.sessionmaker, lb.cipher) is not None


@blueprint.get("/login")
async def login() -> Any:
    return await page("login.html", csrf_token=await local_csrf_token(), totp=await _totp_enabled(),
                      next=_next_url(request.args.get("next")))


@blueprint.post("/login")
async def login_post() -> Any:
    lb = lb_of(current_app)
    assert lb.sessionmaker is not None and lb.cipher is not None
    form = await request.form
    totp = await totp_secret(lb.sessionmaker, lb.cipher)
    target = _next_url(form.get("next"))
    values = {"csrf_token": await local_csrf_token(), "totp": totp is not None, "next": target}
    client = client_address()
    wait = throttle().retry_after(client)
    if wait:
        body, status = await page("login.html", 429, error=f"Too many failed sign-ins. Try again in {wait} s.",
                                  **values)
        return body, status, {"retry-after": str(wait)}
    stored = await password_hash(lb.sessionmaker)
    ok = stored is not None and verify_password(stored, str(form.get("password", "")))
    if ok and totp is not None:
        import pyotp

        ok = pyotp.TOTP(totp).verify(str(form.get("code", "")).replace(" ", ""), valid_window=1)
    if not ok:
        throttle().failed(client)
        return await page("login.html", 401, error="Wrong password or code.", **values)
    session_id, _ = await create_session(lb.sessionmaker, kind="admin",
                                         lifetime=lb.settings.dashboard_session_hours * 3600)
    await sign_in(session_id)
    return redirect(target, 303)


@blueprint.post("/logout")
async def logout() -> Any:
    lb = lb_of(current_app)
    who = viewer()
    if who.session_id_hash is not None and lb.sessionmaker is not None:
        await end_session(lb.sessionmaker, who.session_id_hash)
    sign_out()
    return redirect(url_for("dashboard.key_login" if who.kind == "key" else "dashboard.login"), 303)
