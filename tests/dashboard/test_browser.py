"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the proxy over sockets.

Screenshots go to ``tests/artifacts/dashboard/`` (printed at the end) for a person to look at.
CI installs chromium (``.ci/run``); Playwright never downloads a browser here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from codexlb.db.dashboard_queries import LogFilter, request_page
from codexlb.db.requestlog import insert_request_logs
from codexlb.testing.harness import ProxyHarness
from codexlb.testing.secrets import register_secret
from plugins.api_keys import ApiKeys
from tests.dashboard.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is needed at /usr/bin/chromium: apt-get install -y chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def _seed_history(proxy: ProxyHarness) -> None:
    """A week of older traffic, so the charts have something to draw."""
    assert proxy.lb.sessionmaker is not None
    accounts = proxy.lb.pool.all()
    now = time.time()
    rows = [{"time": now - 3 * 3600 - n * 1800, "endpoint": "responses", "model": "gpt-5",
             "status": 429 if n % 17 == 0 else 200, "account_id": accounts[n % 2].id,
             "account_label": accounts[n % 2].label, "input_tokens": 1200 + 40 * (n % 9),
             "cached_tokens": 600 + 30 * (n % 7), "output_tokens": 300 + 25 * (n % 5), "reasoning_tokens": 64,
             "ttfb_ms": 180.0, "duration_ms": 2100.0, "route": "sticky:new", "attempts": 1}
            for n in range(330)]
    await insert_request_logs(proxy.lb.sessionmaker, rows)


async def _logged(proxy: ProxyHarness, model: str, count: int) -> None:
    """Wait until the log writer has flushed ``count`` rows of ``model``."""
    assert proxy.lb.sessionmaker is not None
    for _ in range(200):
        page = await request_page(proxy.lb.sessionmaker, LogFilter(model=model), limit=count)
        if len(page.rows) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} {model} requests were never logged")


async def test_dashboard_in_chromium(keyed: ProxyHarness, chromium: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await _seed_history(keyed)
    for model, count in (("gpt-5", 3), ("gpt-5-codex", 2)):
        for _ in range(count):
            answer = await keyed.client.post("/v1/responses", json={"model": model, "input": "hello"})
            assert answer.status_code == 200
    await _logged(keyed, "gpt-5-codex", 2)

    problems: list[str] = []
    context = await chromium.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    # sign in
    await page.goto(f"{keyed.url}/dashboard/")
    assert "/dashboard/login" in page.url
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{keyed.url}/dashboard/")

    # the fake backend's accounts, and the live refresh replacing the status part
    rows = page.locator("table.accounts tbody tr")
    assert await rows.count() == 2
    assert await page.locator("tr[data-account=acct1]").count() == 1
    await page.wait_for_function("document.querySelector('.live').dataset.updated", timeout=20_000)
    await page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    # pause acct1 and see its status change
    await page.click("nav >> text=Accounts")
    row = page.locator("tr[data-account=acct1]")
    assert (await row.locator(".status").inner_text()) == "active"
    await row.locator("button", has_text="Pause").click()
    await page.wait_for_url("**/dashboard/accounts?notice=*")
    assert (await page.locator("tr[data-account=acct1] .status").inner_text()) == "paused"
    assert keyed.lb.pool.all()[0].status.value == "paused"
    await page.screenshot(path=str(ARTIFACTS / "accounts.png"), full_page=True)

    # filter the request log
    await page.click("nav >> text=Requests")
    await page.fill("input[name=model]", "gpt-5-codex")
    await page.click("#filters button[type=submit]")
    await page.wait_for_url("**/dashboard/requests?*model=gpt-5-codex*")
    models = await page.locator("table.requests tbody tr td:nth-child(3)").all_inner_texts()
    assert models == ["gpt-5-codex", "gpt-5-codex"]
    await page.screenshot(path=str(ARTIFACTS / "requests-filtered.png"), full_page=True)
    await page.locator("table.requests tbody tr td a").first.click()
    await page.wait_for_url("**/dashboard/requests/*")
    assert "Route reason" in await page.inner_text("main")

    # create an API key and see it exactly once
    await page.click("nav >> text=API keys")
    await page.fill("#create-key input[name=name]", "browser-key")
    await page.click("#create-key summary")
    await page.fill("#create-key input[name=limit-requests-day]", "100")
    await page.click("#create-key button[type=submit]")
    await page.wait_for_selector("#new-key")
    secret = (await page.inner_text("#new-key")).strip()
    register_secret(secret)
    assert secret.startswith("sk-clb-") and "only this once" in await page.inner_text("main")
    await page.screenshot(path=str(ARTIFACTS / "key-created.png"), full_page=True)
    await page.click("text=Done")
    await page.wait_for_url("**/dashboard/keys/browser-key")
    assert secret not in await page.content()
    await page.click("nav >> text=API keys")
    await page.wait_for_url("**/dashboard/keys")
    assert secret not in await page.content() and await page.locator("tr[data-key=browser-key]").count() == 1
    used = await keyed.client.post("/v1/responses", json={"model": "gpt-5", "input": "hi"},
                                   headers={"authorization": f"Bearer {secret}"})
    assert used.status_code == 200
    plugin = keyed.lb.pm.get_plugin("api_keys")
    assert isinstance(plugin, ApiKeys)
    await plugin.sync()
    await page.reload()
    assert "1 / 100 requests per day" in await page.inner_text("tr[data-key=browser-key]")
    await page.screenshot(path=str(ARTIFACTS / "keys.png"), full_page=True)

    # the key's holder signs in with it and sees only their own usage
    holder = await chromium.new_context(viewport={"width": 1280, "height": 900})
    mine = await holder.new_page()
    mine.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning") else None)
    await mine.goto(f"{keyed.url}/dashboard/my")
    assert "/dashboard/my/login" in mine.url
    await mine.fill("input[name=api_key]", secret)
    await mine.click("#key-login button[type=submit]")
    await mine.wait_for_url(f"{keyed.url}/dashboard/my")
    text = await mine.inner_text("main")
    assert "browser-key" in text and "1 / 100 requests per day" in text and "Pool headroom" in text
    assert "acct1" not in text and await mine.locator("nav a").all_inner_texts() == ["My usage"]
    await mine.screenshot(path=str(ARTIFACTS / "my-usage.png"), full_page=True)
    forbidden = await holder.request.get(f"{keyed.url}/dashboard/accounts", max_redirects=0)  # its cookie
    assert forbidden.status == 403 and "acct1" not in await forbidden.text()
    await holder.close()

    # every other page, without console errors
    for name in ("Settings", "Jobs"):
        await page.click(f"nav >> text={name}")
        await page.wait_for_load_state()
        await page.screenshot(path=str(ARTIFACTS / f"{name.lower()}.png"), full_page=True)
    await page.goto(f"{keyed.url}/dashboard/accounts/{keyed.lb.pool.all()[1].id}")
    assert "Recent requests" in await page.inner_text("main")
    await context.close()

    # a phone-width screen: nothing wider than the viewport but the scrollable tables
    phone = await chromium.new_context(viewport={"width": 375, "height": 740}, storage_state=None)
    narrow = await phone.new_page()
    narrow.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
              if msg.type in ("error", "warning") else None)
    await narrow.goto(f"{keyed.url}/dashboard/login")
    await narrow.fill("input[name=password]", PASSWORD)
    await narrow.click("button[type=submit]")
    await narrow.wait_for_url(f"{keyed.url}/dashboard/")
    for path in ("/dashboard/", "/dashboard/accounts", "/dashboard/requests", "/dashboard/keys",
                 "/dashboard/keys/browser-key"):
        await narrow.goto(f"{keyed.url}{path}")
        width = await narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{path} is {width} px wide on a 375 px screen"
    await narrow.goto(f"{keyed.url}/dashboard/")
    await narrow.screenshot(path=str(ARTIFACTS / "overview-phone.png"), full_page=True)
    await phone.close()

    assert problems == []
    print(f"\nscreenshots: {ARTIFACTS}")
