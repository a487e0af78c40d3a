"""Model registry: ETag revalidation, persistence, and the model routes answering from the cache."""

from __future__ import annotations

from pathlib import Path

from codexlb.app import CodexLB
from codexlb.db.registry import get_registry
from codexlb.jobs.models import ModelRegistry
from codexlb.testing.fake_models import catalog_for
from codexlb.testing.fake_upstream import FakeUpstream, Fault
from codexlb.testing.harness import proxy_server
from codexlb.types import AccountStatus

from .conftest import PIPELINE, FakeClock, running_lb


async def test_fetch_persists_and_revalidates_with_etag(tmp_path: Path, fake: FakeUpstream,
                                                        clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, model_registry_enabled=True,
                          model_registry_client_version="0.130.0") as lb:
        assert not lb.models.ready
        await lb.jobs.tick()
        assert lb.models.ready and lb.jobs.models.status.last_ok
        assert [m["slug"] for m in lb.models.models or []] == [m["slug"] for m in catalog_for("plus", "0.130.0")]
        first = fake.requests_for("models")[0]
        assert first.query["client_version"] == "0.130.0" and "if-none-match" not in first.headers
        assert first.headers["chatgpt-account-id"] == lb.pool.all()[0].chatgpt_account_id

        assert lb.sessionmaker is not None
        stored = await get_registry(lb.sessionmaker, "codex_models:0.130.0")
        assert stored is not None and stored.etag == lb.models.etag and stored.fetched_at == clock.now
        fetched_at = stored.fetched_at

        clock.advance(299)
        await lb.jobs.tick()
        assert len(fake.requests_for("models")) == 1  # not due before the interval
        clock.advance(1)
        await lb.jobs.tick()
        second = fake.requests_for("models")[1]
        assert second.headers["if-none-match"] == lb.models.etag  # 304: the cache is kept
        assert lb.jobs.models.status.last_ok and lb.models.entry is not None
        assert lb.models.entry.fetched_at == fetched_at


async def test_failures_keep_the_cache_and_try_another_account(tmp_path: Path, fake: FakeUpstream,
                                                               clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, model_registry_enabled=True, usage_fetch_max_retries=0) as lb:
        first, second = lb.pool.all()
        fake.inject(first.chatgpt_account_id, Fault.server_error(), endpoint="models")
        status = await lb.jobs.models.run_once()
        assert status.last_ok and lb.models.ready
        assert [r.account_id for r in fake.requests_for("models")] == [first.chatgpt_account_id,
                                                                       second.chatgpt_account_id]
        fake.inject(None, Fault.server_error(), endpoint="models", times=-1)
        status = await lb.jobs.models.run_once()
        assert status.last_ok is False and "HTTP 500" in (status.last_error or "") and lb.models.ready


async def test_no_usable_account_is_reported(tmp_path: Path, fake: FakeUpstream, clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=1, model_registry_enabled=True) as lb:
        for account in lb.pool.all():
            lb.pool.set_status(account, AccountStatus.PAUSED, None)
        status = await lb.jobs.models.run_once()
        assert status.last_error == "no usable account to fetch the model list with"


async def test_an_empty_pool_is_not_an_error(tmp_path: Path, fake: FakeUpstream, clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=0, model_registry_enabled=True) as lb:
        status = await lb.jobs.models.run_once()
        assert status.last_error is None and fake.requests_for("models") == []


def registry_with(lb: CodexLB, models: list[dict[str, object]], etag: str = 'W/"abc"') -> ModelRegistry:
    from codexlb.db.registry import RegistryEntry

    registry = ModelRegistry(lb)
    registry.entry = RegistryEntry(registry.key, etag, {"models": models}, 1.0)
    return registry


async def test_codex_answer_filters_by_client_version_and_honours_etag(lb: CodexLB) -> None:
    models = [{"slug": "new", "minimal_client_version": "0.142.2"},
              {"slug": "old", "minimal_client_version": [0, 50, 0]}, {"slug": "any"}]
    registry = registry_with(lb, models)
    full = registry.codex_response()
    assert full.status == 200 and full.header("etag") == 'W/"abc"'
    assert registry.codex_response(if_none_match='W/"abc"').status == 304
    older = registry.codex_response("0.100.0")
    assert b'"new"' not in older.body and b'"old"' in older.body and b'"any"' in older.body  # type: ignore[operator]
    assert older.header("etag") != 'W/"abc"'
    assert registry.codex_response("0.150.0").header("etag") == 'W/"abc"'
    openai = registry.openai_response()
    assert b'"id":"new"' in openai.body  # type: ignore[operator]


async def test_routes_answer_from_the_cache_after_a_restart_with_the_upstream_down(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, model_registry_enabled=True) as proxy:
        await proxy.lb.jobs.run_now("models")
        assert proxy.lb.models.ready
        fetched = len(proxy.fake.requests_for("models"))
        live = await proxy.client.get("/v1/models")
        assert live.status_code == 200 and live.headers["x-codexlb-route"] == "model_registry:cache"
        slugs = [m["id"] for m in live.json()["data"]]
        assert slugs and len(proxy.fake.requests_for("models")) == fetched  # answered from memory
        newer = await proxy.client.get("/backend-api/codex/models", params={"client_version": "0.150.0"})
        assert newer.status_code == 200 and len(proxy.fake.requests_for("models")) == fetched + 1
        assert len(newer.json()["models"]) > len(slugs)  # a newer client sees models the cache lacks

    down = FakeUpstream()  # never started: the upstream is unreachable
    async with proxy_server(tmp_path, accounts=1, fake=down, pipeline=PIPELINE, model_registry_enabled=True) as proxy:
        assert proxy.lb.models.ready  # loaded from the database at start
        answer = await proxy.client.get("/v1/models")
        assert answer.status_code == 200 and [m["id"] for m in answer.json()["data"]] == slugs
        codex = await proxy.client.get("/backend-api/codex/models", params={"client_version": "0.101.0"})
        assert codex.status_code == 200 and [m["slug"] for m in codex.json()["models"]] == slugs
        again = await proxy.client.get("/backend-api/codex/models", params={"client_version": "0.101.0"},
                                       headers={"if-none-match": codex.headers["etag"]})
        assert again.status_code == 304
        proxy.lb.jobs.models.backoff = 0.0
        status = await proxy.lb.jobs.run_now("models")
        assert status.last_ok is False and "unreachable" in (status.last_error or "")
        assert (await proxy.client.get("/v1/models")).status_code == 200
        newer = await proxy.client.get("/backend-api/codex/models", params={"client_version": "0.150.0"})
        assert newer.status_code == 200 and newer.headers["x-codexlb-route"] == "model_registry:fallback"
        assert [m["slug"] for m in newer.json()["models"]] == slugs


async def test_routes_pass_through_without_a_cache(tmp_path: Path, fake: FakeUpstream) -> None:
    fake.inject(None, Fault.server_error(), endpoint="models", times=-1)  # before the scheduler starts
    async with proxy_server(tmp_path, accounts=1, fake=fake, pipeline=PIPELINE, model_registry_enabled=True,
                            usage_fetch_max_retries=0) as proxy:
        await proxy.lb.jobs.run_now("models")
        assert not proxy.lb.models.ready
        proxy.fake.clear_faults()
        answer = await proxy.client.get("/v1/models")
        assert answer.status_code == 200 and "x-codexlb-route" in answer.headers
        assert answer.headers["x-codexlb-route"] != "model_registry:cache"
    async with proxy_server(tmp_path / "off", accounts=1, pipeline=PIPELINE) as proxy:  # registry disabled
        await proxy.client.get("/v1/models")
        assert len(proxy.fake.requests_for("models")) == 1
