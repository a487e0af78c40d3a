"""``/api/keys``: the same operations as ``codexlb keys``, behind the admin guard like all of ``/api``.

- ``GET /api/keys``: every key (never the key itself).
- ``POST /api/keys`` ``{"name", "limits"?: ["requests=500/day", ...], "models"?: [...],
  "accounts"?: [...], "expires"?: "30d"}``: 201 with the key in ``key`` (shown once).
- ``GET /api/keys/<name>``: one key with its usage against each limit and in each window.
- ``PATCH /api/keys/<name>`` ``{"limits"?: [...], "models"?: [...] | null, "accounts"?: [...] | null}``:
  replace its limits or scope (``null``: any model or account).
- ``POST /api/keys/<name>/revoke``, ``POST /api/keys/<name>/rotate`` (the new key in ``key``).
- ``GET /api/keys/usage?since=7d&name=NAME``: requests, tokens, cached share, errors and last use
  per key and account, from the request log.

Registered by the ``api_keys`` plugin; changes reach this process's key ring at once and other
processes within their sync interval.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from quart import Blueprint, current_app, jsonify, request

from codexlb.app import lb_of
from codexlb.keys.limits import LimitError, parse_duration
from codexlb.keys.report import usage_by_key
from codexlb.keys.service import KeyInputError, create_key, key_summary, update_key
from codexlb.keys.store import ApiKey, KeyExists, KeyNotFound, KeyStore
from codexlb.web import json_error

if TYPE_CHECKING:
    from codexlb.app import CodexLB

blueprint = Blueprint("keys_api", __name__, url_prefix="/api/keys")
CREATE_FIELDS = {"name", "limits", "models", "accounts", "expires"}


class KeysApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@blueprint.errorhandler(KeysApiError)
async def _error(exc: KeysApiError) -> Any:
    return json_error(exc.status, exc.code, exc.message, kind={404: "not_found_error"}.get(exc.status))


def _lb() -> CodexLB:
    return lb_of(current_app)


def _store() -> KeyStore:
    lb = _lb()
    if lb.sessionmaker is None:
        raise KeysApiError(503, "not_ready", "the database is not open yet")
    return KeyStore(lb.sessionmaker)


def publish(lb: CodexLB, key: ApiKey) -> None:
    """Put a changed key into this process's key ring at once (other processes see it at their next sync)."""
    plugin = lb.pm.get_plugin("api_keys")
    ring = getattr(plugin, "ring", None)
    if ring is not None and ring.loaded:
        ring.put(key)


def _labels() -> dict[str, str]:
    return {a.id: a.label for a in _lb().pool.all()}


async def _get(name: str) -> ApiKey:
    try:
        return await _store().get(name)
    except KeyNotFound as exc:
        raise KeysApiError(404, "api_key_not_found", str(exc)) from None


@blueprint.get("")
async def list_keys() -> Any:
    labels = _labels()
    return jsonify({"object": "list", "data": [key_summary(k, labels) for k in await _store().list()]})


@blueprint.post("")
async def create() -> Any:
    body = await request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise KeysApiError(400, "invalid_json", "expected a JSON object with name (and limits, models, accounts, "
                           "expires)")
    unknown = set(body) - CREATE_FIELDS
    if unknown:
        raise KeysApiError(400, "invalid_request", f"unknown field(s) {', '.join(sorted(unknown))} "
                           f"(allowed: {', '.join(sorted(CREATE_FIELDS))})")
    limits = body.get("limits") or []
    if not isinstance(limits, list):
        raise KeysApiError(400, "invalid_request", "limits: expected a list such as [\"requests=500/day\"]")
    lb = _lb()
    if lb.store is None:
        raise KeysApiError(503, "not_ready", "the database is not open yet")
    try:
        key, secret = await create_key(_store(), lb.store.find, body.get("name"), limits=limits,
                                       models=body.get("models"), accounts=body.get("accounts"),
                                       expires=body.get("expires"))
    except KeyInputError as exc:
        raise KeysApiError(400, "invalid_request", str(exc)) from None
    except KeyExists as exc:
        raise KeysApiError(409, "api_key_exists", str(exc)) from None
    publish(_lb(), key)
    return jsonify({**key_summary(key, _labels()), "key": secret}), 201


@blueprint.get("/usage")
async def usage() -> Any:
    try:
        since = time.time() - parse_duration(request.args.get("since", "7d"), "since")
    except LimitError as exc:
        raise KeysApiError(400, "invalid_request", str(exc)) from None
    name = request.args.get("name")
    key_id = (await _get(name)).id if name else None
    rows = await usage_by_key(_store().sessionmaker, since=since, key_id=key_id)
    return jsonify({"object": "list", "since": since, "data": rows})


@blueprint.get("/<name>")
async def show(name: str) -> Any:
    key = await _get(name)
    counts = await _store().current_counts(key.id)
    return jsonify(key_summary(key, _labels(), counts))


@blueprint.patch("/<name>")
async def change(name: str) -> Any:
    body = await request.get_json(force=True, silent=True)
    if not isinstance(body, dict) or not body:
        raise KeysApiError(400, "invalid_json", "expected a JSON object with limits, models and/or accounts")
    lb = _lb()
    if lb.store is None:
        raise KeysApiError(503, "not_ready", "the database is not open yet")
    try:
        key = await update_key(_store(), lb.store.find, (await _get(name)).id, body)
    except KeyInputError as exc:
        raise KeysApiError(400, "invalid_request", str(exc)) from None
    publish(lb, key)
    return jsonify(key_summary(key, _labels(), await _store().current_counts(key.id)))


@blueprint.post("/<name>/revoke")
async def revoke(name: str) -> Any:
    key = await _get(name)
    revoked = await _store().revoke(key.id)
    publish(_lb(), revoked)
    return jsonify(key_summary(revoked, _labels()))


@blueprint.post("/<name>/rotate")
async def rotate(name: str) -> Any:
    key = await _get(name)
    rotated, secret = await _store().rotate(key.id)
    publish(_lb(), rotated)
    return jsonify({**key_summary(rotated, _labels()), "key": secret})
