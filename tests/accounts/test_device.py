"""`codexlb accounts login --device` and the device-code poller against the fake, over sockets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from codexlb.accounts.device import poll_device, start_device
from codexlb.accounts.oauth import LoginError
from codexlb.settings import Settings
from codexlb.testing.fake_faults import Fault
from codexlb.testing.fake_upstream import FakeUpstream
from tests.accounts.conftest import assert_no_secrets, make_settings, stored

CODE_RE = r"\n  ([A-Z]{4}-[A-Z]{4})\n"


async def test_device_login_stores_the_account(fake: FakeUpstream, settings: Settings, cli, caplog) -> None:
    account = fake.next_login = fake.add_account("acct-device", email="device@example.com", plan_type="team")
    run = cli(settings, "accounts", "login", "--device")
    user_code = (await run.wait_for(CODE_RE)).group(1)
    assert f"{fake.auth_base_url}/codex/device" in run.out
    await fake.wait_for_request(lambda r: r.path.endswith("/deviceauth/token"))  # polled while pending
    fake.approve_device(user_code)
    assert await run.result() == 0
    assert re.search(r"added account acct-\w{8} <device@example.com> \(plan team", run.out)
    exchange = fake.requests_for("token")[-1]
    assert f"redirect_uri={fake.auth_base_url}/deviceauth/callback".replace(":", "%3A").replace("/", "%2F") \
        in exchange.body.decode()
    [row] = await stored(settings)
    assert (row.chatgpt_account_id, row.plan_type, row.access_token) == ("acct-device", "team", account.access_token)
    assert_no_secrets(fake, run.output, caplog=caplog)


async def test_device_login_denied(fake: FakeUpstream, settings: Settings, cli) -> None:
    run = cli(settings, "accounts", "login", "--device")
    fake.deny_device((await run.wait_for(CODE_RE)).group(1))
    assert await run.result() == 1
    assert "denied" in run.err and await stored(settings) == []


async def test_device_login_not_enabled(fake: FakeUpstream, settings: Settings, cli) -> None:
    fake.inject(None, Fault.status(404, {"detail": "Not Found"}), endpoint="device")
    run = cli(settings, "accounts", "login", "--device")
    assert await run.result() == 1
    assert "device login is not enabled" in run.err and "--manual" in run.err


async def test_poll_uses_the_server_interval(tmp_path: Path) -> None:
    """The interval comes from the server ("5", a string); no real sleeping: the sleep is recorded."""
    async with FakeUpstream(device_interval=5) as fake:
        settings = make_settings(tmp_path, fake)
        device = await start_device(settings)
        assert device.interval == 5.0 and device.user_code in fake.oauth.devices
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            if len(slept) == 2:
                fake.approve_device(device.user_code)

        tokens = await poll_device(settings, device, sleep=sleep)
        assert slept == [5.0, 5.0] and len(fake.requests_for("device")) == 4  # usercode + 3 polls
        assert tokens.access_token == next(iter(fake.accounts.values())).access_token


async def test_poll_gives_up_when_the_code_expires(fake: FakeUpstream, settings: Settings) -> None:
    device = await start_device(settings)
    now = [device.expires_at - 1]

    async def sleep(seconds: float) -> None:
        now[0] += 10

    with pytest.raises(LoginError, match="expired") as info:
        await poll_device(settings, device, sleep=sleep, clock=lambda: now[0])
    assert info.value.code == "device_expired"
