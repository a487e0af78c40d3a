"""Admin HTTP API under ``/api`` (for a dashboard): accounts and OAuth login.

Every route is behind :mod:`codexlb.web.admin_guard` (this machine only, ``Host``/``Origin`` checked,
``Content-Type: application/json`` for bodies), installed on the app by :mod:`codexlb.web.admission`.

- ``POST /api/accounts/oauth/start`` ``{"label"?}``: a new browser login; returns the authorize URL and
  starts the callback listener (``listening: false`` when its port is busy: then paste via ``complete``).
- ``GET /api/accounts/oauth/status``: ``idle`` | ``pending`` | ``success`` (with the account) | ``error``.
- ``POST /api/accounts/oauth/complete`` ``{"callback_url"}``: finish with the URL the browser ended on.
- ``POST /api/accounts/import``: an auth.json document, or a list of them (all are checked first:
  one invalid document imports none).
- ``GET /api/accounts``, ``GET|PATCH|DELETE /api/accounts/<id>`` (PATCH: ``label``, ``priority``,
  ``status`` ``paused``/``active``).

New and changed accounts go into the running pool at once. Answers never contain tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from quart import Blueprint, current_app, jsonify, request

from codexlb.accounts.authjson import AuthBatchError, check_batch, import_auth, parse_auth_json
from codexlb.accounts.login import LoginSession
from codexlb.accounts.oauth import LoginError
from codexlb.accounts.views import account_summary
from codexlb.app import lb_of
from codexlb.db.store import AmbiguousAccount
from codexlb.types import AccountStatus
from codexlb.web import json_error

if TYPE_CHECKING:
    from codexlb.app import CodexLB
    from codexlb.db.store import AccountStore, StoredAccount

blueprint = Blueprint("api", __name__, url_prefix="/api")
log = logging.getLogger("codexlb.web")
SESSION_KEY = "codexlb_oauth_session"
PATCH_FIELDS = {"label", "priority", "status", "max_primary_percent", "max_secondary_percent"}
CAP_FIELDS = ("max_primary_percent", "max_secondary_percent")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> Any:
    return json_error(status, code, message, kind={403: "permission_error", 404: "not_found_error"}.get(status))


@blueprint.errorhandler(ApiError)
async def _api_error(exc: ApiError) -> Any:
    return _error(exc.status, exc.code, exc.message)


def _lb() -> CodexLB:
    return lb_of(current_app)


def _store() -> AccountStore:
    store = _lb().store
    if store is None:
        raise ApiError(503, "not_ready", "the database is not open yet")
    return store


async def _json_body(*, required: bool = True) -> Any:
    data = await request.get_json(silent=True)  # the guard already required application/json
    if data is None and required:
        raise ApiError(400, "invalid_json", "request body must be JSON")
    return data


async def _resolve(ref: str) -> StoredAccount:
    try:
        account = await _store().find(ref)
    except AmbiguousAccount as exc:
        raise ApiError(400, "ambiguous_account", str(exc)) from None
    if account is None:
        raise ApiError(404, "account_not_found", f"no account matches {ref!r}")
    return account


def _summary(row: StoredAccount) -> dict[str, Any]:
    live = _lb().pool.get(row.id)
    return account_summary(live if live is not None else row)


# -- OAuth ------------------------------------------------------------------------------------------------


def _current() -> tuple[LoginSession, asyncio.Task[None]] | None:
    return current_app.extensions.get(SESSION_KEY)


async def _run_session(session: LoginSession, timeout: float) -> None:
    """Keep the listener up until the login ends or times out, then stop it."""
    try:
        with contextlib.suppress(LoginError):
            await session.wait(timeout)
    finally:
        await session.close()


@blueprint.post("/accounts/oauth/start")
async def oauth_start() -> Any:
    lb, store = _lb(), _store()
    body = await _json_body(required=False) or {}
    label = body.get("label") if isinstance(body, dict) else None
    previous = _current()
    if previous is not None:
        await previous[0].close()
        previous[1].cancel()
    session = LoginSession(lb.settings, store, label=label if isinstance(label, str) and label else None,
                           on_saved=lambda row: None if lb.pool.put(row) else None)
    message = None
    try:
        await session.listen()
    except LoginError as exc:
        message = f"{exc.message} Paste the final URL to POST /api/accounts/oauth/complete instead."
    timeout = lb.settings.oauth_timeout_seconds
    task = lb.tasks.spawn(_run_session(session, timeout), "oauth-login")
    current_app.extensions[SESSION_KEY] = (session, task)
    answer = {"authorize_url": session.url, "redirect_uri": session.redirect_uri, "expires_in": timeout,
              **session.snapshot()}
    if message:
        answer["message"] = message
    return jsonify(answer)


@blueprint.get("/accounts/oauth/status")
async def oauth_status() -> Any:
    current = _current()
    return jsonify(current[0].snapshot() if current else {"status": "idle", "listening": False})


@blueprint.post("/accounts/oauth/complete")
async def oauth_complete() -> Any:
    current = _current()
    if current is None:
        raise ApiError(409, "no_login", "no login in progress; POST /api/accounts/oauth/start first")
    body = await _json_body()
    url = body.get("callback_url") if isinstance(body, dict) else None
    if not isinstance(url, str) or not url.strip():
        raise ApiError(400, "invalid_request", "expected {\"callback_url\": \"http://localhost:1455/auth/callback?...\"}")
    try:
        await current[0].complete(url)
    except LoginError as exc:
        raise ApiError(400 if exc.code != "timeout" else 504, exc.code, exc.message) from None
    return jsonify(current[0].snapshot())


# -- accounts ---------------------------------------------------------------------------------------------


@blueprint.post("/accounts/import")
async def import_accounts() -> Any:
    store, lb = _store(), _lb()
    body = await _json_body()
    documents = body if isinstance(body, list) else [body]
    try:
        parsed = check_batch((f"item {n}" if isinstance(body, list) else "", partial(parse_auth_json, document))
                             for n, document in enumerate(documents))
    except AuthBatchError as exc:
        raise ApiError(400, "invalid_auth_json", str(exc)) from None
    out = []
    for auth in parsed:
        try:
            row, created = await import_auth(store, auth)
        except LoginError as exc:
            raise ApiError(400, exc.code, exc.message) from None
        lb.pool.put(row)
        out.append({**_summary(row), "created": created})
    return jsonify({"object": "list", "data": out})


@blueprint.get("/accounts")
async def list_accounts() -> Any:
    rows = await _store().list()
    return jsonify({"object": "list", "data": [_summary(row) for row in rows]})


@blueprint.get("/accounts/<ref>")
async def get_account(ref: str) -> Any:
    return jsonify(_summary(await _resolve(ref)))


def _patch_values(body: Any, row: StoredAccount) -> dict[str, Any]:
    if not isinstance(body, dict) or not body:
        raise ApiError(400, "invalid_request", "expected a JSON object with label, priority and/or status")
    unknown = set(body) - PATCH_FIELDS
    if unknown:
        raise ApiError(400, "invalid_request", f"cannot change {', '.join(sorted(unknown))} "
                       f"(allowed: {', '.join(sorted(PATCH_FIELDS))})")
    values: dict[str, Any] = {}
    if "label" in body:
        label = body["label"]
        if not isinstance(label, str) or not label.strip() or len(label) > 200:
            raise ApiError(400, "invalid_request", "label must be a non-empty string of at most 200 characters")
        values["label"] = label.strip()
    if "priority" in body:
        if not isinstance(body["priority"], int) or isinstance(body["priority"], bool):
            raise ApiError(400, "invalid_request", "priority must be an integer")
        values["priority"] = body["priority"]
    if "status" in body:
        if body["status"] not in ("paused", "active"):
            raise ApiError(400, "invalid_request", "status must be \"paused\" or \"active\"")
        if body["status"] == "active" and row.status is AccountStatus.REAUTH_REQUIRED:
            raise ApiError(409, "reauth_required", f"account {row.label} needs a new login "
                           f"({row.status_reason}); start one with POST /api/accounts/oauth/start")
        values["status"], values["status_reason"] = body["status"], None
    for name in CAP_FIELDS:
        if name in body:
            cap = body[name]
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float)
                                    or not 0 < cap <= 100):
                raise ApiError(400, "invalid_request", f"{name} must be a number above 0 and at most 100, "
                               "or null for no cap")
            values[name] = None if cap is None else float(cap)
    return values


@blueprint.patch("/accounts/<ref>")
async def patch_account(ref: str) -> Any:
    row = await _resolve(ref)
    values = _patch_values(await _json_body(), row)
    await _store().update(row.id, **values)
    pool = _lb().pool
    live = pool.get(row.id)
    if live is not None:
        live.label = values.get("label", live.label)
        live.priority = values.get("priority", live.priority)
        if "status" in values:
            pool.set_status(live, AccountStatus(values["status"]), None)
        for name in CAP_FIELDS:
            if name in values:
                setattr(live, name, values[name])
    updated = await _store().get(row.id)
    return jsonify(_summary(updated or row))


@blueprint.delete("/accounts/<ref>")
async def delete_account(ref: str) -> Any:
    row = await _resolve(ref)
    await _store().delete(row.id)
    _lb().pool.remove(row.id)
    log.info("account %s removed via the API", row.label)
    return jsonify({"id": row.id, "object": "account", "deleted": True})
