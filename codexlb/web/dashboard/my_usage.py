"""My usage: an API-key holder signs in with the key and sees that key's usage and the pool's headroom.

The page shows the key's own limits, its requests and tokens in each window, and the remaining
quota of the accounts it may use, summed (no account's label, email or token). A key session
opens nothing else (see :func:`codexlb.web.dashboard.guard`); it ends when the key is revoked,
rotated or expires. Failed key sign-ins count against the same per-client throttle as passwords.
"""

from __future__ import annotations

import time
from typing import Any

from quart import current_app, redirect, request, url_for

from codexlb.app import lb_of
from codexlb.db.dashboard_auth import create_session
from codexlb.db.dashboard_queries import recent_snapshots
from codexlb.keys.service import key_summary
from codexlb.keys.store import KeyStore
from codexlb.web.dashboard import blueprint, figures, page, viewer
from codexlb.web.dashboard.keys import METRIC_NAMES, WINDOW_NAMES
from codexlb.web.dashboard.session import (
    client_address,
    current_session,
    live_key,
    local_csrf_token,
    sign_in,
    throttle,
)

KEY_FIELD = "api_key"


@blueprint.get("/my/login")
async def key_login() -> Any:
    return await page("key_login.html", csrf_token=await local_csrf_token())


@blueprint.post("/my/login")
async def key_login_post() -> Any:
    lb = lb_of(current_app)
    assert lb.sessionmaker is not None
    values = {"csrf_token": await local_csrf_token()}
    client = client_address()
    wait = throttle().retry_after(client)
    if wait:
        body, status = await page("key_login.html", 429, error=f"Too many failed sign-ins. Try again in {wait} s.",
                                  **values)
        return body, status, {"retry-after": str(wait)}
    presented = str((await request.form).get(KEY_FIELD, "")).strip()
    key = await KeyStore(lb.sessionmaker).find_secret(presented) if presented else None
    if key is None or key.state() != "active":
        throttle().failed(client)
        return await page("key_login.html", 401, error="That key is not valid: unknown, revoked or expired.",
                          **values)
    session_id, _ = await create_session(lb.sessionmaker, kind="key", subject=key.id,
                                         lifetime=lb.settings.dashboard_session_hours * 3600)
    await sign_in(session_id)
    return redirect(url_for("dashboard.my_usage"), 303)


@blueprint.get("/my")
async def my_usage() -> Any:
    if viewer().kind != "key":  # admins see every key, with more, on the keys page
        return redirect(url_for("dashboard.keys"))
    session = await current_session()
    key = await live_key(session) if session is not None else None
    if key is None:  # the guard has checked it; it ended in between
        return redirect(url_for("dashboard.key_login"))
    lb = lb_of(current_app)
    assert lb.sessionmaker is not None
    now = time.time()
    counts = await KeyStore(lb.sessionmaker).current_counts(key.id, now)
    summary = {k: v for k, v in key_summary(key, None, counts, now).items() if k not in ("id", "accounts")}
    accounts = [a for a in lb.pool.all() if key.accounts is None or a.id in key.accounts]
    snapshots = await recent_snapshots(lb.sessionmaker, now - figures.PACE_WINDOW_SECONDS)
    return await page("my_usage.html", key=summary, scoped=key.accounts is not None, now=now,
                      outlook=figures.outlook(accounts, snapshots, now), metrics=METRIC_NAMES, windows=WINDOW_NAMES)
