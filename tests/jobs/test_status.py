"""Job visibility: statuses persisted in ``meta``, ``GET /api/jobs`` (loopback only), ``codexlb jobs``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from codexlb.app import create_app, lb_of
from codexlb.cli import jobs as jobs_cli
from codexlb.cli import main
from codexlb.jobs import read_statuses
from codexlb.testing.fake_upstream import FakeUpstream, Fault
from codexlb.testing.harness import make_settings, proxy_server

from .conftest import PIPELINE, FakeClock, running_lb


async def test_statuses_are_persisted_after_each_run(tmp_path: Path, fake: FakeUpstream, clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=1, usage_fetch_max_retries=0) as lb:
        fake.inject(None, Fault.server_error(), endpoint="usage")
        await lb.jobs.tick()
        assert lb.sessionmaker is not None
        leader, stored = await read_statuses(lb.sessionmaker)
        assert leader is not None and leader["instance"] == lb.jobs.identity["instance"]
        assert set(stored) == {"usage", "models", "tokens"}
        usage = stored["usage"]
        assert usage.enabled and usage.last_run == clock.now and usage.runs == 1 and usage.last_ok is False
        assert usage.last_error == "acct1: HTTP 500 (after 1 attempt)" and usage.last_error_at == clock.now
        assert usage.next_run == clock.now + 60 and usage.leader == lb.jobs.identity
        assert stored["models"].enabled is False and stored["models"].next_run is None
        assert stored["tokens"].runs == 0 and stored["tokens"].next_run == clock.now + 60

        clock.advance(60)
        await lb.jobs.tick()
        _, stored = await read_statuses(lb.sessionmaker)
        assert stored["usage"].last_ok and stored["usage"].runs == 2
        assert stored["usage"].last_error is not None  # the last error stays visible (with its time)


async def test_api_jobs_lists_each_job(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, usage_refresh_enabled=True) as proxy:
        await proxy.lb.jobs.run_now("usage")
        answer = await proxy.client.get("/api/jobs")
        assert answer.status_code == 200
        data = answer.json()
        assert data["instance"]["is_leader"] and data["leader"]["instance"] == data["instance"]["instance"]
        jobs = {job["name"]: job for job in data["jobs"]}
        assert list(jobs) == ["usage", "models", "tokens"]
        assert jobs["usage"]["enabled"] and jobs["usage"]["leader"] and jobs["usage"]["last_run"]
        assert jobs["usage"]["next_run"] and "last_error" in jobs["usage"]
        assert not jobs["models"]["enabled"] and jobs["models"]["next_run"] is None
        one = await proxy.client.get("/api/jobs", params={"job": "tokens"})
        assert [job["name"] for job in one.json()["jobs"]] == ["tokens"]


@pytest.mark.parametrize(("client", "forwarded"), [(("203.0.113.9", 4000), None), (("127.0.0.1", 4000), "203.0.113.9")])
async def test_api_jobs_refuses_non_loopback_clients(tmp_path: Path, client: tuple[str, int],
                                                     forwarded: str | None) -> None:
    app = create_app(make_settings(tmp_path, pipeline_plugins=PIPELINE))
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    answer = await app.test_client().get("/api/jobs", scope_base={"client": client}, headers=headers)
    assert answer.status_code == 403
    assert (await answer.get_json())["error"]["code"] == "forbidden"
    assert lb_of(app).started is False


async def test_cli_prints_the_recorded_statuses(tmp_path: Path, fake: FakeUpstream, clock: FakeClock,
                                                capsys: Any, monkeypatch: Any) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=1) as lb:
        await lb.jobs.tick()
        settings = lb.settings
    assert await asyncio.to_thread(jobs_cli.show, argparse.Namespace(json=False), settings) == 0
    table = capsys.readouterr().out
    assert f"pid {os.getpid()}" in table and "on sqlite" in table
    lines = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert list(lines) == ["JOB", "usage", "models", "tokens"]
    assert lines["usage"].split()[1] == "yes" and lines["models"].split()[1] == "no"

    for name, value in {"CODEX_LB_DATABASE_URL": settings.database_url, "CODEX_LB_DATA_DIR": settings.data_dir,
                        "CODEX_LB_ENCRYPTION_KEY_FILE": settings.encryption_key_file}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert await asyncio.to_thread(main, ["jobs", "--json"]) == 0  # through the CLI's parser
    data = json.loads(capsys.readouterr().out)
    assert data["leader"]["pid"] == os.getpid()
    usage = next(job for job in data["jobs"] if job["name"] == "usage")
    assert usage["recorded"] and usage["runs"] == 1 and usage["last_run"] == clock.now


def test_cli_without_a_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert jobs_cli.show(argparse.Namespace(json=False), settings) == 1


def test_render_before_any_run() -> None:
    text = jobs_cli.render({"leader": None, "jobs": [{"name": "usage", "enabled": True, "recorded": False}]})
    assert "leader: none recorded" in text and "usage" in text
