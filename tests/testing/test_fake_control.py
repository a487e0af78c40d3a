"""The fault vocabulary as specs, the new stream faults, and the fake's /_fake/ control endpoint."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from codexlb.testing.fake_faults import FAULT_KINDS, Fault, fault_from_spec, parse_fault_arg, split_spec
from codexlb.testing.fake_sse import parse_sse, sample_request
from codexlb.testing.fake_upstream import FakeAccount, FakeUpstream

ACCOUNT = "acct-fake-0001"


def test_every_fault_kind_builds_from_its_name_with_defaults_or_a_parameter() -> None:
    needs = {"slow": {"delay_s": 0.1}, "slow_events": {"delay_s": 0.1}, "status": {"code": 418}}
    for kind in FAULT_KINDS:
        fault = fault_from_spec(kind, needs.get(kind, {}))
        assert fault.kind == kind
        assert fault.describe()["fault"] == kind


@pytest.mark.parametrize(("text", "spec"), [
    ("usage_limit,resets_in_seconds=600,account=1,times=-1",
     {"fault": "usage_limit", "resets_in_seconds": 600, "account": 1, "times": -1}),
    ("slow_events, delay_s=0.25", {"fault": "slow_events", "delay_s": 0.25}),
    ('{"fault": "server_error", "status": 503}', {"fault": "server_error", "status": 503}),
    ("token_expired,account=acct-1", {"fault": "token_expired", "account": "acct-1"}),
])
def test_fault_arguments_parse_to_specs(text: str, spec: dict) -> None:
    assert parse_fault_arg(text) == spec


@pytest.mark.parametrize(("spec", "message"), [
    ({"fault": "usage_limt"}, "unknown fault 'usage_limt'; known: "),
    ({"fault": "slow", "delay": 1}, "fault 'slow' has no parameter delay (parameters: delay_s)"),
    ({"fault": "drop_mid_stream", "after_events": -1}, "after_events must not be negative"),
    ({"fault": "refuse", "times": 0}, "times must be a positive whole number or -1"),
    ({"fault": "refuse", "endpoint": "nowhere"}, "unknown endpoint 'nowhere'"),
    ({"kind": "refuse"}, 'a fault spec is an object with a "fault" name'),
])
def test_bad_fault_specs_name_what_is_allowed(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_spec(spec)


async def test_a_hang_after_the_head_is_a_stall_after_zero_events(fake: FakeUpstream,
                                                                  fake_client: httpx.AsyncClient) -> None:
    fault, _, _, _ = split_spec(parse_fault_arg("stall_mid_stream,after_events=0"))
    assert fault == Fault.stall_mid_stream(after_events=0)
    fake.inject(ACCOUNT, fault)
    async with fake_client.stream("POST", "/codex/responses", json=sample_request()) as response:
        assert response.status_code == 200
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await response.aread()


async def test_slow_events_stream_every_frame_with_a_pause(fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.slow_events(0.05))
    arrivals: list[float] = []
    async with fake_client.stream("POST", "/codex/responses", json=sample_request()) as response:
        async for _ in response.aiter_raw():
            arrivals.append(asyncio.get_running_loop().time())
    assert len(arrivals) >= 5  # one write per frame instead of one for the whole answer


async def test_refresh_refused_expires_the_token_then_refuses_the_refresh(
        fake: FakeUpstream, fake_client: httpx.AsyncClient, fake_account: FakeAccount,
        fake_auth_client: httpx.AsyncClient) -> None:
    fake.inject(ACCOUNT, Fault.refresh_refused())
    assert (await fake_client.post("/codex/responses", json=sample_request())).json()["error"]["code"] == \
        "token_expired"
    refresh = await fake_auth_client.post("/oauth/token", json={
        "grant_type": "refresh_token", "refresh_token": fake_account.refresh_token,
        "client_id": "app_EMoamEEZ73f0CkXaXp7hrann"})
    assert refresh.status_code == 401 and refresh.json()["error"]["code"] == "refresh_token_invalidated"
    assert fake.faults_fired == {"token_expired": 1, "refresh_token_invalidated": 1}


async def test_control_endpoint_queues_lists_counts_and_clears_faults(
        fake: FakeUpstream, fake_client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=f"{fake.auth_base_url}/_fake") as control:
        queued = await control.post("/faults", json=[{"fault": "server_error", "status": 503, "account": 1},
                                                     {"fault": "rate_limited", "times": -1}])
        assert queued.status_code == 201 and queued.json()["queued"] == 2
        assert [p["fault"] for p in (await control.get("/faults")).json()["pending"]] == \
            ["server_error", "rate_limited"]
        assert (await fake_client.post("/codex/responses", json=sample_request())).status_code == 503
        assert (await fake_client.post("/codex/responses", json=sample_request())).status_code == 429
        counters = (await control.get("/counters")).json()
        assert counters["faults_fired"] == {"server_error": 1, "rate_limited": 1}
        assert counters["requests"]["responses"] == {ACCOUNT: 2}
        log = (await control.get("/requests", params={"since": 1})).json()
        assert [(r["n"], r["account_id"], r["fault"]) for r in log] == [(1, ACCOUNT, "rate_limited")]
        assert (await control.delete("/faults")).json() == {"pending": []}
        response = await fake_client.post("/codex/responses", json=sample_request())
        assert response.status_code == 200 and parse_sse(response.content)[-1][0] == "response.completed"
        bad = await control.post("/faults", json=[{"fault": "refuse"}, {"fault": "nope"}])
        assert bad.status_code == 400 and bad.json()["error"]["message"].endswith("nothing was queued")
        assert (await control.get("/faults")).json() == {"pending": []}
        assert len(fake.requests) == 3  # control calls are not recorded as upstream traffic


async def test_control_endpoint_sets_usage_and_adds_accounts(fake: FakeUpstream, fake_account: FakeAccount,
                                                             fake_client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=f"{fake.auth_base_url}/_fake") as control:
        updated = await control.post("/usage", json={"account": ACCOUNT, "primary_used_percent": 95,
                                                     "secondary_used_percent": 40})
        assert updated.json()[0]["primary_used_percent"] == 95
        response = await fake_client.post("/codex/responses", json=sample_request())
        assert response.headers["x-codex-primary-used-percent"] == "95"
        assert (await control.post("/usage", json={"primary_used_percent": 101})).status_code == 400
        made = (await control.post("/accounts", json={"count": 2, "plan_type": "pro"})).json()
        assert [m["plan_type"] for m in made] == ["pro", "pro"]
        assert made[0]["auth_json"]["tokens"]["account_id"] == made[0]["chatgpt_account_id"]
        assert len((await control.get("/accounts")).json()) == 3


def test_fake_upstream_command_refuses_a_bad_fault_with_one_line_each() -> None:
    done = subprocess.run([sys.executable, "-m", "codexlb", "fake-upstream", "--port", "0",
                           "--fault", "slow,delay=1", "--fault", "usage_limit,resets_in_seconds=60"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("codexlb fake-upstream: --fault 'slow,delay=1': fault 'slow' has no parameter "
                                   "delay (parameters: delay_s)")
