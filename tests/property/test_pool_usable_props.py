"""``AccountPool.usable``: its fast path for plain active accounts agrees with the full check."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from codexlb.pool import CAP_REASON, LIMITED, SPENT_REASON, AccountPool
from codexlb.types import Account, AccountStatus, UsageWindow

NOW = 1_800_000_000.0
offsets = st.sampled_from([-3600.0, -1.0, 0.0, 1.0, 3600.0])
percents = st.sampled_from([0.0, 50.0, 79.9, 80.0, 99.9, 100.0, 120.0])


@st.composite
def accounts(draw: st.DrawFn, n: int) -> Account:
    def window(minutes: int) -> UsageWindow:
        resets = draw(st.one_of(st.none(), offsets))
        return UsageWindow(draw(percents), minutes, None if resets is None else NOW + resets)

    return Account(
        id=f"a{n}", status=draw(st.sampled_from(list(AccountStatus))),
        status_reason=draw(st.sampled_from([None, f"{CAP_REASON} primary window at 80%", SPENT_REASON])),
        cooldown_until=NOW + draw(offsets), primary=window(300), secondary=window(10080),
        max_primary_percent=draw(st.sampled_from([None, 80.0])),
        max_secondary_percent=draw(st.sampled_from([None, 80.0])))


def reference_usable(pool: AccountPool, now: float) -> list[Account]:
    """The full check for every account (what ``usable`` did before its fast path)."""
    out = []
    for account in pool.accounts.values():
        pool._hold_back(account, now)
        if account.status in LIMITED and account.cooldown_until <= now:
            pool.set_status(account, AccountStatus.ACTIVE, None)
        if account.usable(now):
            out.append(account)
    return out


def state(pool: AccountPool) -> list[tuple[object, ...]]:
    return [(a.id, a.status, a.status_reason, a.cooldown_until) for a in pool.accounts.values()]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=6).flatmap(
    lambda n: st.tuples(*(accounts(i) for i in range(n)))))
def test_usable_matches_the_full_check(drawn: tuple[Account, ...]) -> None:
    fast, full = AccountPool(), AccountPool()
    for account in drawn:
        fast.accounts[account.id] = account
        full.accounts[account.id] = copy.deepcopy(account)
    assert [a.id for a in fast.usable(now=NOW)] == [a.id for a in reference_usable(full, NOW)]
    assert state(fast) == state(full)
