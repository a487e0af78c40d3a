"""Accounts: the list, one account's detail, and the forms that change them (no JavaScript needed).

Every change goes through :mod:`codexlb.accounts.service` (and the browser login of
:mod:`codexlb.web.api`), exactly as ``/api`` does.
"""

from __future__ import annotations

import json
import time
from typing import Any

from quart import current_app, redirect, request, url_for

from codexlb.accounts import service
from codexlb.accounts.oauth import LoginError
from codexlb.accounts.service import ServiceError
from codexlb.app import lb_of
from codexlb.db.dashboard_queries import LogFilter, account_conversations, request_page, usage_points
from codexlb.web import api
from codexlb.web.dashboard import blueprint, figures, page

HISTORY_DAYS = 7
MAX_UPLOAD_BYTES = 1_000_000


async def _list(**values: Any) -> Any:
    lb = lb_of(current_app)
    rows = await service.store_of(lb).list()
    accounts = [service.summary(lb, row) for row in rows]
    status = values.pop("status", 200)
    return await page("accounts.html", status, accounts=accounts, now=time.time(),
                      oauth=api.oauth_snapshot(), device=service.device_status(current_app.extensions), **values)


@blueprint.get("/accounts")
async def accounts() -> Any:
    return await _list(notice=request.args.get("notice"))


@blueprint.get("/accounts/<account_id>")
async def account_detail(account_id: str) -> Any:
    lb = lb_of(current_app)
    try:
        row = await service.resolve(lb, account_id)
    except ServiceError as exc:
        return await page("message.html", exc.status, title="No such account", message=exc.message)
    now = time.time()
    assert lb.sessionmaker is not None
    history, points = await usage_points(lb.sessionmaker, row.id, since=now - HISTORY_DAYS * 86400)
    recent = await request_page(lb.sessionmaker, LogFilter(account_id=row.id), limit=20)
    conversations = await account_conversations(lb.sessionmaker, row.id, since=now - 86400)
    return await page("account.html", account=service.summary(lb, row), now=now, history=history,
                      chart=figures.usage_chart(points) if points else None, recent=recent.rows,
                      conversations=conversations[:50])


async def _act(change: Any, done: str) -> Any:
    try:
        await change
    except ServiceError as exc:
        return await _list(error=exc.message, status=exc.status)
    return redirect(url_for("dashboard.accounts", notice=done), 303)


@blueprint.post("/accounts/<account_id>/pause")
async def pause(account_id: str) -> Any:
    return await _act(service.change_account(lb_of(current_app), account_id, {"status": "paused"}), "Paused.")


@blueprint.post("/accounts/<account_id>/resume")
async def resume(account_id: str) -> Any:
    return await _act(service.change_account(lb_of(current_app), account_id, {"status": "active"}), "Resumed.")


@blueprint.post("/accounts/<account_id>/remove")
async def remove(account_id: str) -> Any:
    return await _act(service.remove_account(lb_of(current_app), account_id, via="the dashboard"), "Removed.")


@blueprint.post("/accounts/upload")
async def upload() -> Any:
    files = await request.files
    upload = files.get("auth_json")
    raw = upload.read(MAX_UPLOAD_BYTES + 1) if upload is not None else b""
    if not raw or len(raw) > MAX_UPLOAD_BYTES:
        return await _list(error="Choose an auth.json file (at most 1 MB).", status=400)
    try:
        document = json.loads(raw)
    except ValueError:
        return await _list(error="That file is not JSON; choose the auth.json that `codex login` wrote.",
                           status=400)
    try:
        imported = await service.import_documents(lb_of(current_app), document)
    except ServiceError as exc:
        return await _list(error=exc.message, status=exc.status)
    names = ", ".join(f"{a['label']} ({'added' if a['created'] else 'updated'})" for a in imported)
    return redirect(url_for("dashboard.accounts", notice=f"Imported {names}."), 303)


@blueprint.post("/accounts/oauth")
async def oauth() -> Any:
    """Start a browser login (also used to re-login an account: the same ChatGPT account is updated)."""
    form = await request.form
    label = str(form.get("label", "")).strip() or None
    try:
        started = await api.begin_oauth(label)
    except ServiceError as exc:
        return await _list(error=exc.message, status=exc.status)
    return await page("oauth.html", started=started, label=label)


@blueprint.post("/accounts/oauth/complete")
async def oauth_complete() -> Any:
    form = await request.form
    current = api.current_login()
    if current is None:
        return await _list(error="No browser login is in progress; start one first.", status=409)
    try:
        await current.complete(str(form.get("callback_url", "")))
    except LoginError as exc:
        return await _list(error=exc.message, status=400)
    return redirect(url_for("dashboard.accounts", notice="Signed in; the account is in the pool."), 303)


@blueprint.post("/accounts/device")
async def device() -> Any:
    form = await request.form
    label = str(form.get("label", "")).strip() or None
    try:
        flow = await service.start_device_login(lb_of(current_app), current_app.extensions, label)
    except ServiceError as exc:
        return await _list(error=exc.message, status=exc.status)
    return await page("device.html", device=flow.snapshot())


@blueprint.get("/accounts/device")
async def device_status() -> Any:
    return await page("device.html", device=service.device_status(current_app.extensions))
