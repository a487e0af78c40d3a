"""Budgets learned from spend: one process alone, and replicas sharing their spend totals."""

from __future__ import annotations

from codexlb.testing import make_account
from codexlb.types import Account, TokenUsage
from plugins._headroom import Headroom

TURN = TokenUsage(input=1000, output=0)
"""1,000 quota tokens a turn; the account's true budget is 100,000 (1 % per turn)."""


def answer(headroom: Headroom, account: Account, used: float) -> None:
    account.primary.used_percent = account.secondary.used_percent = used
    headroom.observe(account, None, TURN, 0.0)


def test_one_process_learns_the_budget_from_its_spend() -> None:
    headroom, account = Headroom(), make_account("a")
    for turn in range(5):
        answer(headroom, account, 10.0 + turn)
    assert headroom.budget(account, 0) == 100_000.0
    assert headroom.knows(account)


def share(replica: Headroom) -> None:
    """What a replica's periodic tick does, with the totals kept here instead of in the database."""
    added = replica.unshared()
    for account_id, tokens in added.items():
        TOTALS[account_id] = TOTALS.get(account_id, 0.0) + tokens
    replica.shared(dict(TOTALS), added)


TOTALS: dict[str, float] = {}


def test_replicas_sharing_their_spend_learn_the_whole_budget() -> None:
    TOTALS.clear()
    replicas = [Headroom(), Headroom()]
    alone = [Headroom(), Headroom()]
    views = [make_account("a") for _ in replicas]
    for replica in replicas:
        share(replica)
    for turn in range(10):  # turns alternate between the replicas; both read the totals between turns
        n = turn % 2
        answer(replicas[n], views[n], 10.0 + turn)
        answer(alone[n], views[n], 10.0 + turn)
        share(replicas[n])
        share(replicas[1 - n])
    assert [r.budget(v, 0) for r, v in zip(replicas, views, strict=True)] == [100_000.0, 100_000.0]
    assert [r.budget(v, 0) for r, v in zip(alone, views, strict=True)] == [50_000.0, 50_000.0]  # half each


def test_one_replica_sharing_only_its_own_spend_learns_as_one_process() -> None:
    TOTALS.clear()
    headroom, account = Headroom(), make_account("a")
    for turn in range(5):
        answer(headroom, account, 10.0 + turn)
        share(headroom)
    assert headroom.budget(account, 0) == 100_000.0 and headroom.total("a") == 5_000.0


def test_a_total_seen_for_the_first_time_starts_the_measure_afresh() -> None:
    TOTALS.clear()
    TOTALS["a"] = 5_000_000.0  # spent by others before this replica read the totals
    headroom, account = Headroom(), make_account("a")
    answer(headroom, account, 10.0)
    share(headroom)  # the total jumps by what others spent: no budget from that jump
    assert not headroom.knows(account)
    for turn in range(1, 4):
        answer(headroom, account, 10.0 + turn)
        share(headroom)
    assert headroom.budget(account, 0) == 100_000.0
    assert headroom.total("a") == 5_004_000.0
