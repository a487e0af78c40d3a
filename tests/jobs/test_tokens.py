"""Proactive token refresh: every refreshable account goes through ``lb.tokens.refresh_if_due``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from codexlb.testing.fake_upstream import FakeUpstream
from codexlb.types import Account, AccountStatus

from .conftest import FakeClock, running_lb


async def test_calls_refresh_if_due_for_refreshable_accounts(tmp_path: Path, fake: FakeUpstream, clock: FakeClock,
                                                             monkeypatch: Any) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=4, usage_refresh_enabled=False) as lb:
        seen: list[str] = []

        async def refresh_if_due(account: Account) -> bool:
            seen.append(account.label)
            if account.label == "acct2":
                raise RuntimeError("boom")
            return True

        monkeypatch.setattr(lb.tokens, "refresh_if_due", refresh_if_due, raising=False)
        third, fourth = lb.pool.all()[2:]
        lb.pool.set_status(third, AccountStatus.REAUTH_REQUIRED, "refresh refused")
        lb.pool.set_status(fourth, AccountStatus.PAUSED, "by hand")

        job = lb.jobs.tokens
        assert job.next_due() == clock.now + 60  # not at start-up
        await lb.jobs.tick()
        assert seen == []
        clock.advance(60)
        await lb.jobs.tick()
        assert seen == ["acct1", "acct2", "acct4"]  # paused accounts stay fresh; re-login ones are skipped
        assert job.status.last_ok is False
        assert "acct2: refresh failed (RuntimeError: boom)" in (job.status.last_error or "")
        assert job.next_due() == clock.now + 60  # a failed run is retried sooner than the 600 s interval
        clock.advance(60)
        await lb.jobs.tick()
        assert seen[3:] == ["acct1", "acct2", "acct4"]


async def test_refreshes_stale_idle_tokens_through_the_token_manager(tmp_path: Path, fake: FakeUpstream,
                                                                     clock: FakeClock) -> None:
    async with running_lb(tmp_path, fake, clock, accounts=0, usage_refresh_enabled=False,
                          token_refresh_interval_days=8) as lb:
        assert lb.store is not None
        stale, fresh = fake.add_account(), fake.add_account()
        for n, (account, age_days) in enumerate(((stale, 9), (fresh, 1)), 1):
            row, _ = await lb.store.upsert(
                chatgpt_account_id=account.chatgpt_account_id, email=account.email, plan_type=account.plan_type,
                access_token=account.access_token, refresh_token=account.refresh_token, id_token=account.id_token,
                label=f"acct{n}", token_refreshed_at=time.time() - age_days * 86400)
            lb.pool.put(row)
        old_token = stale.access_token
        clock.advance(60)
        await lb.jobs.tick()
        assert (stale.refresh_calls, fresh.refresh_calls) == (1, 0)
        assert lb.jobs.tokens.status.last_ok
        pooled = lb.pool.credentials[lb.pool.all()[0].id]
        assert pooled.access_token == stale.access_token != old_token
        stored = await lb.store.get(lb.pool.all()[0].id)
        assert stored is not None and stored.access_token == stale.access_token
