"""Read-only pages over real sockets: Overview parts, request log filters and detail, Settings, Jobs."""

from __future__ import annotations

from pathlib import Path

from codexlb.testing.harness import proxy_server
from tests.dashboard.conftest import PIPELINE


async def test_pages_show_what_they_promise(tmp_path: Path) -> None:
    secret = "sk-dashboard-secret-value"
    pipeline = ("firewall", *PIPELINE)
    async with proxy_server(tmp_path, accounts=2, pipeline=pipeline, api_keys=(secret,)) as proxy:
        auth = {"authorization": f"Bearer {secret}"}
        for model in ("gpt-5", "gpt-5-codex"):
            assert (await proxy.client.post("/v1/responses", json={"model": model, "input": "hi"},
                                             headers=auth)).status_code == 200
        status = await proxy.client.get("/dashboard/overview/live?part=status")
        assert status.status_code == 200 and "acct1" in status.text and "<svg" not in status.text
        charts = await proxy.client.get("/dashboard/overview/live?part=charts")
        assert charts.status_code == 200 and charts.text.count("<svg") == 4 and "<script" not in charts.text

        bad = await proxy.client.get("/dashboard/requests?status=teapot&since=yesterday")
        assert bad.status_code == 400 and "status: give ok, error" in bad.text and "since: give a date" in bad.text
        filtered = await proxy.client.get("/dashboard/requests?model=gpt-5-codex&status=ok")
        assert filtered.status_code == 200
        settings = await proxy.client.get("/dashboard/settings")
        assert settings.status_code == 200 and "CODEX_LB_API_KEYS" in settings.text
        assert secret not in settings.text and "select_sticky" in settings.text
        jobs = await proxy.client.get("/dashboard/jobs")
        assert jobs.status_code == 200 and all(name in jobs.text for name in ("usage", "models", "tokens"))
        missing = await proxy.client.get("/dashboard/requests/999999")
        assert missing.status_code == 404 and "not in the log" in missing.text
