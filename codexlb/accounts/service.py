"""Account changes of a running server, shared by the ``/api`` routes and the dashboard's forms.

Each function writes the database and updates the running pool at once. Errors are
:class:`ServiceError` with an HTTP status, a code and a message for people.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from codexlb.accounts.authjson import AuthBatchError, check_batch, import_auth, parse_auth_json
from codexlb.accounts.device import DeviceLogin, poll_device, start_device
from codexlb.accounts.login import save_login
from codexlb.accounts.oauth import LoginError
from codexlb.accounts.views import account_summary
from codexlb.db.store import AmbiguousAccount
from codexlb.types import AccountStatus

if TYPE_CHECKING:
    from codexlb.app import CodexLB
    from codexlb.db.store import AccountStore, StoredAccount

log = logging.getLogger("codexlb.accounts")
PATCH_FIELDS = {"label", "priority", "status", "max_primary_percent", "max_secondary_percent"}
CAP_FIELDS = ("max_primary_percent", "max_secondary_percent")
DEVICE_KEY = "codexlb_device_login"


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def store_of(lb: CodexLB) -> AccountStore:
    if lb.store is None:
        raise ServiceError(503, "not_ready", "the database is not open yet")
    return lb.store


async def resolve(lb: CodexLB, ref: str) -> StoredAccount:
    try:
        account = await store_of(lb).find(ref)
    except AmbiguousAccount as exc:
        raise ServiceError(400, "ambiguous_account", str(exc)) from None
    if account is None:
        raise ServiceError(404, "account_not_found", f"no account matches {ref!r}")
    return account


def summary(lb: CodexLB, row: StoredAccount) -> dict[str, Any]:
    """The account as the API shows it (the live pool's state when it is loaded)."""
    live = lb.pool.get(row.id)
    return account_summary(live if live is not None else row)


def patch_values(body: Any, row: StoredAccount) -> dict[str, Any]:
    """Checked column values of a PATCH body (``label``, ``priority``, ``status``)."""
    if not isinstance(body, dict) or not body:
        raise ServiceError(400, "invalid_request", "expected a JSON object with label, priority and/or status")
    unknown = set(body) - PATCH_FIELDS
    if unknown:
        raise ServiceError(400, "invalid_request", f"cannot change {', '.join(sorted(unknown))} "
                           f"(allowed: {', '.join(sorted(PATCH_FIELDS))})")
    values: dict[str, Any] = {}
    if "label" in body:
        label = body["label"]
        if not isinstance(label, str) or not label.strip() or len(label) > 200:
            raise ServiceError(400, "invalid_request", "label must be a non-empty string of at most 200 characters")
        values["label"] = label.strip()
    if "priority" in body:
        if not isinstance(body["priority"], int) or isinstance(body["priority"], bool):
            raise ServiceError(400, "invalid_request", "priority must be an integer")
        values["priority"] = body["priority"]
    if "status" in body:
        if body["status"] not in ("paused", "active"):
            raise ServiceError(400, "invalid_request", "status must be \"paused\" or \"active\"")
        if body["status"] == "active" and row.status is AccountStatus.REAUTH_REQUIRED:
            raise ServiceError(409, "reauth_required", f"account {row.label} needs a new login "
                               f"({row.status_reason}); start one with POST /api/accounts/oauth/start")
        values["status"], values["status_reason"] = body["status"], None
    for name in CAP_FIELDS:
        if name in body:
            cap = body[name]
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float)
                                    or not 0 < cap <= 100):
                raise ServiceError(400, "invalid_request", f"{name} must be a number above 0 and at most 100, "
                                   "or null for no cap")
            values[name] = None if cap is None else float(cap)
    return values


async def change_account(lb: CodexLB, ref: str, body: Any) -> dict[str, Any]:
    """Apply a PATCH body to the account ``ref``; returns its summary."""
    row = await resolve(lb, ref)
    values = patch_values(body, row)
    store = store_of(lb)
    await store.update(row.id, **values)
    live = lb.pool.get(row.id)
    if live is not None:
        live.label = values.get("label", live.label)
        live.priority = values.get("priority", live.priority)
        if "status" in values:
            lb.pool.set_status(live, AccountStatus(values["status"]), None)
        for name in CAP_FIELDS:
            if name in values:
                setattr(live, name, values[name])
    updated = await store.get(row.id)
    return summary(lb, updated or row)


async def remove_account(lb: CodexLB, ref: str, *, via: str = "the API") -> StoredAccount:
    row = await resolve(lb, ref)
    await store_of(lb).delete(row.id)
    lb.pool.remove(row.id)
    log.info("account %s removed via %s", row.label, via)
    return row


async def import_documents(lb: CodexLB, body: Any) -> list[dict[str, Any]]:
    """Import one auth.json document or a list of them (all checked first: one bad imports none)."""
    store = store_of(lb)
    documents = body if isinstance(body, list) else [body]
    try:
        parsed = check_batch((f"item {n}" if isinstance(body, list) else "", partial(parse_auth_json, document))
                             for n, document in enumerate(documents))
    except AuthBatchError as exc:
        raise ServiceError(400, "invalid_auth_json", str(exc)) from None
    out = []
    for auth in parsed:
        try:
            row, created = await import_auth(store, auth)
        except LoginError as exc:
            raise ServiceError(400, exc.code, exc.message) from None
        lb.pool.put(row)
        out.append({**summary(lb, row), "created": created})
    return out


# -- device-code login ---------------------------------------------------------------------------


@dataclass(slots=True)
class DeviceFlow:
    """A device-code login the server polls in the background."""

    device: DeviceLogin
    status: str = "pending"
    account: dict[str, Any] | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "user_code": self.device.user_code,
                               "verification_url": self.device.verification_url,
                               "expires_in": max(0, round(self.device.expires_at - time.time()))}
        if self.account is not None:
            out["account"] = self.account
        if self.error is not None:
            out["error"] = self.error
        return out


async def _poll(lb: CodexLB, flow: DeviceFlow, label: str | None) -> None:
    try:
        tokens = await poll_device(lb.settings, flow.device)
        row, created = await save_login(store_of(lb), tokens, label=label)
        lb.pool.put(row)
        flow.account, flow.status = {**summary(lb, row), "created": created}, "success"
    except LoginError as exc:
        flow.status, flow.error = "error", exc.message
    except Exception:  # report, and keep the server up
        log.exception("device login failed")
        flow.status, flow.error = "error", "device login failed; see the server log"


async def start_device_login(lb: CodexLB, extensions: dict[str, Any], label: str | None) -> DeviceFlow:
    """Ask for a user code and poll for its approval in the background (replaces an earlier one)."""
    store_of(lb)
    previous: DeviceFlow | None = extensions.get(DEVICE_KEY)
    if previous is not None and previous.task is not None:
        previous.task.cancel()
        with contextlib.suppress(BaseException):
            await previous.task
    try:
        device = await start_device(lb.settings)
    except LoginError as exc:
        raise ServiceError(502, exc.code, exc.message) from None
    flow = DeviceFlow(device)
    flow.task = lb.tasks.spawn(_poll(lb, flow, label), "device-login")
    extensions[DEVICE_KEY] = flow
    return flow


def device_status(extensions: dict[str, Any]) -> dict[str, Any]:
    flow: DeviceFlow | None = extensions.get(DEVICE_KEY)
    return flow.snapshot() if flow is not None else {"status": "idle"}
