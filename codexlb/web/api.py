"""Admin HTTP API under ``/api`` (for a dashboard): accounts and OAuth login.

Every route is behind :mod:`codexlb.web.admin_guard` (this machine only, ``Host``/``Origin`` checked,
``Content-Type: application/json`` for bodies), installed on the app by :mod:`codexlb.web.admission`.

- ``POST /api/accounts/oauth/start`` ``{"label"?}``: a new browser login; returns the authorize URL and
  starts the callback listener (``listening: false`` when its port is busy: then paste via ``complete``).
- ``GET /api/accounts/oauth/status``: ``idle`` | ``pending`` | ``success`` (with the account) | ``error``.
- ``POST /api/accounts/oauth/complete`` ``{"callback_url"}``: finish with the URL the browser ended on.
- ``POST /api/accounts/device/start`` ``{"label"?}``, ``GET /api/accounts/device/status``: a device-code
  login the server polls (``pending`` | ``success`` | ``error``), with the user code and link.
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
from typing import TYPE_CHECKING, Any

from quart import Blueprint, current_app, jsonify, request

from codexlb.accounts import service
from codexlb.accounts.login import LoginSession
from codexlb.accounts.oauth import LoginError
from codexlb.accounts.service import ServiceError
from codexlb.app import lb_of
from codexlb.web import json_error

if TYPE_CHECKING:
    from codexlb.app import CodexLB

blueprint = Blueprint("api", __name__, url_prefix="/api")
log = logging.getLogger("codexlb.web")
SESSION_KEY = "codexlb_oauth_session"
ApiError = ServiceError


def _error(status: int, code: str, message: str) -> Any:
    return json_error(status, code, message, kind={403: "permission_error", 404: "not_found_error"}.get(status))


@blueprint.errorhandler(ServiceError)
async def _api_error(exc: ServiceError) -> Any:
    return _error(exc.status, exc.code, exc.message)


def _lb() -> CodexLB:
    return lb_of(current_app)


async def _json_body(*, required: bool = True) -> Any:
    data = await request.get_json(silent=True)  # the guard already required application/json
    if data is None and required:
        raise ApiError(400, "invalid_json", "request body must be JSON")
    return data


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


async def begin_oauth(label: str | None) -> dict[str, Any]:
    """Start a browser login (replacing an unfinished one); the authorize URL and the state."""
    lb = _lb()
    store = service.store_of(lb)
    previous = _current()
    if previous is not None:
        await previous[0].close()
        previous[1].cancel()
    session = LoginSession(lb.settings, store, label=label or None,
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
    return answer


def current_login() -> LoginSession | None:
    """The browser login in progress (or last finished), if any."""
    current = _current()
    return current[0] if current else None


def oauth_snapshot() -> dict[str, Any]:
    current = _current()
    return current[0].snapshot() if current else {"status": "idle", "listening": False}


@blueprint.post("/accounts/oauth/start")
async def oauth_start() -> Any:
    service.store_of(_lb())
    body = await _json_body(required=False) or {}
    label = body.get("label") if isinstance(body, dict) else None
    return jsonify(await begin_oauth(label if isinstance(label, str) else None))


@blueprint.get("/accounts/oauth/status")
async def oauth_status() -> Any:
    return jsonify(oauth_snapshot())


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


# -- device code ------------------------------------------------------------------------------------------


@blueprint.post("/accounts/device/start")
async def device_start() -> Any:
    body = await _json_body(required=False) or {}
    label = body.get("label") if isinstance(body, dict) else None
    flow = await service.start_device_login(_lb(), current_app.extensions, label if isinstance(label, str) else None)
    return jsonify(flow.snapshot())


@blueprint.get("/accounts/device/status")
async def device_status() -> Any:
    return jsonify(service.device_status(current_app.extensions))


# -- accounts ---------------------------------------------------------------------------------------------


@blueprint.post("/accounts/import")
async def import_accounts() -> Any:
    out = await service.import_documents(_lb(), await _json_body())
    return jsonify({"object": "list", "data": out})


@blueprint.get("/accounts")
async def list_accounts() -> Any:
    lb = _lb()
    rows = await service.store_of(lb).list()
    return jsonify({"object": "list", "data": [service.summary(lb, row) for row in rows]})


@blueprint.get("/accounts/<ref>")
async def get_account(ref: str) -> Any:
    lb = _lb()
    return jsonify(service.summary(lb, await service.resolve(lb, ref)))


@blueprint.patch("/accounts/<ref>")
async def patch_account(ref: str) -> Any:
    return jsonify(await service.change_account(_lb(), ref, await _json_body()))


@blueprint.delete("/accounts/<ref>")
async def delete_account(ref: str) -> Any:
    row = await service.remove_account(_lb(), ref)
    return jsonify({"id": row.id, "object": "account", "deleted": True})
