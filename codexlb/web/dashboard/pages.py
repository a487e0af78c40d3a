"""Read-only pages: Overview (and its live fragment), Settings, Jobs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from quart import current_app, request

from codexlb.app import lb_of
from codexlb.cli.config import effective, plugin_rows
from codexlb.cli.dashboard import ISSUER
from codexlb.db.dashboard_auth import totp_secret
from codexlb.db.dashboard_queries import hourly_totals, recent_snapshots
from codexlb.settings import mask
from codexlb.web.dashboard import blueprint, figures, page

CHART_TTL_SECONDS = 30.0
_CACHE = "codexlb_dashboard_charts"


async def _build(hours: int, group: int) -> dict[str, Any]:
    lb = lb_of(current_app)
    assert lb.sessionmaker is not None
    buckets = await hourly_totals(lb.sessionmaker, hours)
    svg = await asyncio.to_thread(figures.charts, buckets, group_hours=group)  # pygal is slow: off the loop
    return {"svg": svg, "totals": figures.totals(buckets)}


async def _refresh(cache: dict[Any, Any], hours: int, group: int) -> None:
    try:
        cache[hours] = (time.monotonic(), await _build(hours, group))
    finally:
        cache.pop(("building", hours), None)


async def _charts(hours: int, group: int) -> dict[str, Any]:
    """Charts and totals of the last ``hours`` hours.

    Built on the first view; afterwards a view older than :data:`CHART_TTL_SECONDS` is served as it
    is while one background task rebuilds it, so no page waits for the charts twice.
    """
    cache: dict[Any, Any] = current_app.extensions.setdefault(_CACHE, {})
    hit = cache.get(hours)
    if hit is None:
        value = await _build(hours, group)
        cache[hours] = (time.monotonic(), value)
        return value
    if time.monotonic() - hit[0] >= CHART_TTL_SECONDS and ("building", hours) not in cache:
        cache[("building", hours)] = True
        lb_of(current_app).tasks.spawn(_refresh(cache, hours, group), "dashboard-charts")
    return dict(hit[1])


async def _status_values() -> dict[str, Any]:
    lb = lb_of(current_app)
    assert lb.sessionmaker is not None
    now = time.time()
    accounts = sorted(lb.pool.all(), key=lambda a: (a.label.lower(), a.id))
    snapshots = await recent_snapshots(lb.sessionmaker, now - figures.PACE_WINDOW_SECONDS)
    return {"accounts": accounts, "outlook": figures.outlook(accounts, snapshots, now), "now": now}


async def _chart_values() -> dict[str, Any]:
    return {"day": await _charts(24, 1), "week": await _charts(24 * 7, 6)}


@blueprint.get("/")
async def overview() -> Any:
    return await page("overview.html", **await _status_values(), **await _chart_values())


@blueprint.get("/overview/live")
async def overview_live() -> Any:
    """A part of the Overview (``?part=status`` or ``charts``): the page's script swaps it in."""
    if request.args.get("part") == "charts":
        return await page("_overview_charts.html", **await _chart_values())
    return await page("_overview_status.html", **await _status_values())


@blueprint.get("/settings")
async def settings_page() -> Any:
    lb = lb_of(current_app)
    plugins = [{**row, "options": {k: mask(k, v) for k, v in row["options"].items()}}
               for row in plugin_rows(lb.settings, lb.hooks)]
    assert lb.sessionmaker is not None and lb.cipher is not None
    totp = await totp_secret(lb.sessionmaker, lb.cipher) is not None
    return await page("settings.html", settings=effective(lb.settings), plugins=plugins, totp=totp, qr=None)


@blueprint.post("/settings/totp-qr")
async def totp_qr() -> Any:
    """The enabled TOTP secret as a QR code, to add it to another authenticator (signed-in admins)."""
    lb = lb_of(current_app)
    assert lb.sessionmaker is not None and lb.cipher is not None
    secret = await totp_secret(lb.sessionmaker, lb.cipher)
    qr = None
    if secret is not None:
        import pyotp
        import segno

        uri = pyotp.TOTP(secret).provisioning_uri(name="dashboard", issuer_name=ISSUER)
        qr = segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff")
    return await page("settings.html", settings=effective(lb.settings), plugins=[], totp=secret is not None, qr=qr)


@blueprint.get("/jobs")
async def jobs_page() -> Any:
    lb = lb_of(current_app)
    return await page("jobs.html", state=await lb.jobs.describe(), now=time.time())
