"""API keys (admins only): the list with usage per key, create, one key's limits and scope, rotate, revoke.

Every change goes through :mod:`codexlb.keys.service` and :class:`~codexlb.keys.store.KeyStore`,
as ``/api/keys`` and ``codexlb keys`` do, and reaches this process's key ring at once. A new or
rotated key is shown in the answer to that one ``POST`` (``Cache-Control: no-store``) and never
again: only its hash is stored. Usage comes from the keys' window counters (one indexed read of
``api_key_counters``), never from the request log.
"""

from __future__ import annotations

import time
from typing import Any

from quart import current_app, redirect, request, url_for
from werkzeug.datastructures import MultiDict

from codexlb.app import lb_of
from codexlb.keys.limits import METRICS, WINDOWS
from codexlb.keys.service import KeyInputError, create_key, key_summary, update_key
from codexlb.keys.store import ApiKey, KeyExists, KeyNotFound, KeyStore
from codexlb.web.dashboard import blueprint, page
from codexlb.web.keys_api import publish

METRIC_NAMES = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens",
                "total_tokens": "tokens (input + output)"}
WINDOW_NAMES = {"5h": "5 hours", "day": "day", "week": "week", "month": "month"}
NO_STORE = {"cache-control": "no-store"}


def _store() -> KeyStore:
    sessionmaker = lb_of(current_app).sessionmaker
    assert sessionmaker is not None  # the guard answers 503 before the database is open
    return KeyStore(sessionmaker)


def _accounts() -> list[dict[str, str]]:
    return [{"id": a.id, "label": a.label} for a in sorted(lb_of(current_app).pool.all(),
                                                           key=lambda a: (a.label.lower(), a.id))]


def _labels() -> dict[str, str]:
    return {a.id: a.label for a in lb_of(current_app).pool.all()}


def grid_of(key: ApiKey | None) -> dict[str, str]:
    """The limits form's values (``limit-METRIC-WINDOW`` -> number) for ``key``'s limits."""
    return {f"limit-{limit.metric}-{limit.window}": str(limit.max) for limit in key.limits} if key else {}


def changes_of(form: MultiDict[str, str]) -> dict[str, Any]:
    """The limits, models and accounts the form asks for, in the service's input form (validated there)."""
    limits = []
    for metric in METRICS:
        for window in WINDOWS:
            value = form.get(f"limit-{metric}-{window}", "").replace(",", "").replace(" ", "")
            if value:
                limits.append(f"{metric}={value}/{window}")
    return {"limits": limits, "models": form.get("models", "").strip() or None,
            "accounts": [a for a in form.getlist("accounts") if a] or None}


def _form_values(form: MultiDict[str, str]) -> dict[str, Any]:
    return {"grid": {k: v for k, v in form.items() if k.startswith("limit-")}, "models": form.get("models", ""),
            "scope": set(form.getlist("accounts")), "name": form.get("name", ""), "expires": form.get("expires", "")}


async def _list(status: int = 200, **values: Any) -> Any:
    now = time.time()
    store = _store()
    counts, labels = await store.all_current_counts(now), _labels()
    keys = [key_summary(key, labels, counts.get(key.id, {}), now) for key in await store.list()]
    values.setdefault("form", {"grid": {}, "models": "", "scope": set(), "name": "", "expires": ""})
    checked = lb_of(current_app).pm.get_plugin("api_keys") is not None
    return await page("keys.html", status, keys=keys, accounts=_accounts(), now=now, metrics=METRIC_NAMES,
                      windows=WINDOW_NAMES, checked=checked, **values)


async def _secret(key: ApiKey, secret: str, verb: str) -> Any:
    body, status = await page("key_secret.html", key=key_summary(key, _labels()), secret=secret, verb=verb)
    return body, status, NO_STORE


@blueprint.get("/keys")
async def keys() -> Any:
    return await _list(notice=request.args.get("notice"))


@blueprint.post("/keys")
async def key_create() -> Any:
    form = await request.form
    changes = changes_of(form)
    lb = lb_of(current_app)
    assert lb.store is not None
    try:
        key, secret = await create_key(_store(), lb.store.find, form.get("name", "").strip(),
                                       limits=changes["limits"], models=changes["models"],
                                       accounts=changes["accounts"], expires=form.get("expires") or None)
    except (KeyInputError, KeyExists) as exc:
        return await _list(400 if isinstance(exc, KeyInputError) else 409, error=str(exc), form=_form_values(form))
    publish(lb, key)
    return await _secret(key, secret, "created")


async def _key_page(name: str, status: int = 200, **values: Any) -> Any:
    store = _store()
    try:
        key = await store.get(name)
    except KeyNotFound as exc:
        return await page("message.html", 404, title="No such key", message=str(exc))
    now = time.time()
    summary = key_summary(key, _labels(), await store.current_counts(key.id, now), now)
    scope = set(key.accounts or ())
    values.setdefault("form", {"grid": grid_of(key), "models": ", ".join(key.models or ()), "scope": scope})
    accounts = _accounts() + [{"id": a, "label": f"{a} (no longer in the pool)"}
                              for a in sorted(scope - {a.id for a in lb_of(current_app).pool.all()})]
    return await page("key.html", status, key=summary, accounts=accounts, now=now, metrics=METRIC_NAMES,
                      windows=WINDOW_NAMES, **values)


@blueprint.get("/keys/<name>")
async def key_detail(name: str) -> Any:
    return await _key_page(name, notice=request.args.get("notice"))


@blueprint.post("/keys/<name>/limits")
async def key_limits(name: str) -> Any:
    form = await request.form
    lb = lb_of(current_app)
    assert lb.store is not None
    try:
        key = await update_key(_store(), lb.store.find, name, changes_of(form))
    except KeyNotFound as exc:
        return await page("message.html", 404, title="No such key", message=str(exc))
    except KeyInputError as exc:
        return await _key_page(name, 400, error=str(exc), form=_form_values(form))
    publish(lb, key)
    return redirect(url_for("dashboard.key_detail", name=key.name, notice="Limits and scope saved."), 303)


@blueprint.post("/keys/<name>/revoke")
async def key_revoke(name: str) -> Any:
    store = _store()
    try:
        key = await store.revoke((await store.get(name)).id)
    except KeyNotFound as exc:
        return await page("message.html", 404, title="No such key", message=str(exc))
    publish(lb_of(current_app), key)
    return redirect(url_for("dashboard.keys", notice=f"Revoked {key.name}: it is refused from now on."), 303)


@blueprint.post("/keys/<name>/rotate")
async def key_rotate(name: str) -> Any:
    store = _store()
    try:
        key, secret = await store.rotate((await store.get(name)).id)
    except KeyNotFound as exc:
        return await page("message.html", 404, title="No such key", message=str(exc))
    publish(lb_of(current_app), key)
    return await _secret(key, secret, "rotated")
