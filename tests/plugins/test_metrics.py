"""The metrics plugin over real sockets: series after real flows, access rules, label hygiene."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from codexlb.flow import Route
from codexlb.testing.fake_faults import Fault
from codexlb.testing.harness import ProxyHarness, proxy_server
from codexlb.testing.secrets import register_secret
from plugins.metrics import account_label, error_class, route_reason

PIPELINE = ("firewall", "select_sticky", "select_least_used", "select_round_robin", "upstream", "metrics")
CLIENT_KEY = "sk-codexlb-metrics-client-key-0123456789"
register_secret(CLIENT_KEY)
BODY = {"model": "gpt-5.5", "instructions": "", "input": [{"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "hi"}]}], "stream": True, "store": False}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


async def scrape(proxy: ProxyHarness, **headers: str) -> str:
    response = await proxy.client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


async def settled(proxy: ProxyHarness) -> str:
    """A scrape once the answers' background work is done (flow_done runs after the last byte)."""
    await proxy.settle()
    return await scrape(proxy)


async def test_a_streamed_turn_and_a_failover_show_up(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=2, pipeline=PIPELINE) as proxy:
        assert (await proxy.client.post("/backend-api/codex/responses", json=BODY)).status_code == 200
        proxy.fake.inject(None, Fault.usage_limit(resets_in_seconds=600))
        failed_over = await proxy.client.post("/backend-api/codex/responses", json=BODY)
        assert ":fallback-after-429 from=" in failed_over.headers["x-codexlb-route"]
        text = await settled(proxy)
        assert value(text, "codexlb_requests_total", route="codex_responses", status="200",
                     reason="sticky:fallback-after-429") == 1  # without the ids of from=.. to=..
        assert sum(v for (name, _), v in samples(text).items() if name == "codexlb_requests_total") == 2
        assert "codexlb_requests_created" not in text
        assert value(text, "codexlb_ttfb_seconds_count", route="codex_responses") == 2
        assert value(text, "codexlb_request_duration_seconds_count", route="codex_responses") == 2
        assert value(text, "codexlb_upstream_errors_total", **{"class": "usage_limit_reached"}) == 1
        assert value(text, "codexlb_failovers_total") == 1
        assert value(text, "codexlb_active_streams") == 0
        assert value(text, "codexlb_accounts", status="active") == 1
        assert value(text, "codexlb_accounts", status="rate_limited") == 1
        limited = next(a for a in proxy.lb.pool.all() if a.status.value == "rate_limited")
        reset = value(text, "codexlb_account_reset_seconds", account=limited.label, window="secondary")
        assert reset is None or 0 <= reset <= 7 * 86400
        for account in proxy.lb.pool.all():
            assert value(text, "codexlb_account_used_percent", account=account.label, window="primary") is not None
        assert value(text, "codexlb_job_runs_total", job="usage") is not None
        assert value(text, "codexlb_event_loop_lag_seconds") is not None
        assert value(text, "process_cpu_seconds_total") is not None
        for fake_account in proxy.accounts:  # no e-mail, no token anywhere in the output
            assert fake_account.email not in text and fake_account.access_token not in text


async def test_an_active_stream_is_counted_while_it_runs(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE) as proxy:
        proxy.fake.event_delay = 0.05
        async with proxy.client.stream("POST", "/backend-api/codex/responses", json=BODY) as response:
            seen = []
            async for _ in response.aiter_bytes():
                if not seen:
                    seen.append(value(await scrape(proxy), "codexlb_active_streams"))
        assert seen == [1]
        assert response.headers["x-codexlb-route"] == "sticky:new"
        assert value(await settled(proxy), "codexlb_requests_total", route="codex_responses", status="200",
                     reason="sticky:new") == 1
        assert value(await scrape(proxy), "codexlb_active_streams") == 0


async def test_token_refreshes_are_counted(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=2, pipeline=PIPELINE) as proxy:
        first, second = proxy.lb.pool.all()
        assert await proxy.lb.tokens.refresh(first, force=True)
        proxy.fake.inject(None, Fault.refresh_token_expired())
        assert not await proxy.lb.tokens.refresh(second, force=True)
        assert proxy.fake.refresh_calls == 2
        text = await scrape(proxy)
        assert value(text, "codexlb_token_refreshes_total", result="ok") == 1
        assert value(text, "codexlb_token_refreshes_total", result="failed") == 1


async def test_only_this_machine_or_the_token_may_scrape(tmp_path: Path) -> None:
    remote = {"x-forwarded-for": "203.0.113.7"}  # a local reverse proxy forwarding a remote client
    async with proxy_server(tmp_path, accounts=0, pipeline=PIPELINE) as proxy:
        refused = await proxy.client.get("/metrics", headers=remote)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "metrics_forbidden"
        assert "CODEX_LB_METRICS_TOKEN" in refused.json()["error"]["message"]
    async with proxy_server(tmp_path / "t", accounts=0, pipeline=PIPELINE, metrics_token="s3cret-metrics") as proxy:
        assert (await proxy.client.get("/metrics", headers=remote)).status_code == 403
        wrong = await proxy.client.get("/metrics", headers={**remote, "authorization": "Bearer nope-nope"})
        assert wrong.status_code == 401 and "s3cret" not in wrong.text
        await scrape(proxy, **remote, authorization="Bearer s3cret-metrics")


def test_labels_stay_bounded() -> None:
    from codexlb.testing import make_account

    assert account_label(make_account("0123456789", label="someone@example.com")) == "01234567"
    assert account_label(make_account("0123456789", label="team-a")) == "team-a"
    assert error_class("some_new_upstream_code", 503) == "http_5xx"
    assert error_class("whatever") == "other"
    assert route_reason(Route("sticky", "fallback-after-anything_goes")) == "sticky:fallback-after-other"
    assert route_reason(Route("least_used", "fallback-after-429")) == "least_used:fallback-after-429"
    assert route_reason(Route("sticky", "moved-cap", "from=0123abcd to=4567ef01")) == "sticky:moved-cap"
    assert route_reason(None) == "none"


async def test_client_keys_do_not_guard_metrics(tmp_path: Path) -> None:
    """``/metrics`` has its own rule; client admission (keys, allowlist) is for client routes."""
    remote = {"x-forwarded-for": "203.0.113.7"}
    async with proxy_server(tmp_path, accounts=0, pipeline=("firewall", "api_keys", *PIPELINE[1:]),
                            api_keys=(CLIENT_KEY,), metrics_token="s3cret-metrics") as proxy:
        assert (await proxy.client.get("/v1/models")).status_code == 401  # a client route: keys apply
        await scrape(proxy)  # this machine, no client key
        await scrape(proxy, **remote, authorization="Bearer s3cret-metrics")
        with_key = await proxy.client.get("/metrics", headers={**remote, "authorization": f"Bearer {CLIENT_KEY}"})
        assert with_key.status_code == 401 and with_key.json()["error"]["code"] == "invalid_metrics_token"
