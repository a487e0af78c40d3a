"""select_least_used: the score (short window × weekly pace), priority and tie-breaks."""

from __future__ import annotations

import time
from typing import Any

import pytest

from codexlb import ConfigError
from codexlb.testing import make_account, make_flow
from codexlb.types import Account, UsageWindow
from plugins.select_least_used import SelectLeastUsed, effective_remaining, score, weekly_factor

NOW = 1_800_000_000.0
WEEK = 10080 * 60


def least_used(**options: Any) -> SelectLeastUsed:
    plugin = SelectLeastUsed()
    plugin.configure(options)
    return plugin


async def pick(candidates: list[Account], **options: Any) -> Account | None:
    flow = make_flow()
    chosen = await least_used(**options).select_account(flow, candidates)
    if chosen is not None:
        assert str(flow.route) == "least_used:most-remaining"
    return chosen


# -- formula ---------------------------------------------------------------------------------


def test_effective_remaining() -> None:
    assert effective_remaining(UsageWindow(30.0), NOW) == 70.0
    assert effective_remaining(UsageWindow(130.0), NOW) == 0.0
    assert effective_remaining(UsageWindow(90.0, 300, NOW + 3600), NOW) == 10.0
    assert effective_remaining(UsageWindow(90.0, 300, NOW - 1), NOW) == 100.0  # reset already: stale data
    assert effective_remaining(UsageWindow(90.0, 300, NOW + 150), NOW) == pytest.approx(55.0)  # half-way
    assert effective_remaining(UsageWindow(90.0, 300, NOW + 150), NOW, soon=0) == 10.0


def test_weekly_factor_is_remaining_against_time_left() -> None:
    assert weekly_factor(UsageWindow(40.0), NOW) == pytest.approx(0.6)  # reset unknown
    assert weekly_factor(UsageWindow(0.0, 10080, NOW + WEEK), NOW) == 1.0
    assert weekly_factor(UsageWindow(50.0, 10080, NOW + WEEK / 2), NOW) == 1.0  # on pace
    assert weekly_factor(UsageWindow(70.0, 10080, NOW + WEEK / 2), NOW) == pytest.approx(0.6)  # ahead of pace
    assert weekly_factor(UsageWindow(90.0, 10080, NOW + WEEK / 20), NOW) == 1.0  # resets soon: use it
    assert weekly_factor(UsageWindow(100.0, 10080, NOW + WEEK / 20), NOW) == 0.0
    assert weekly_factor(UsageWindow(40.0, None, NOW + WEEK / 2), NOW) == 1.0  # length defaults to a week


def test_score_multiplies_short_by_weekly() -> None:
    account = make_account(short_used_pct=20, weekly_used_pct=70, weekly_resets_at=NOW + WEEK / 2)
    assert score(account, NOW) == pytest.approx(80 * 0.6)


# -- selection -------------------------------------------------------------------------------


async def test_most_remaining_short_window_wins() -> None:
    a, b, c = make_account("a", short_used_pct=60), make_account("b", short_used_pct=10), make_account("c")
    assert await pick([a, b, c]) is c
    assert await pick([a, b]) is b


async def test_weekly_window_weighs_in() -> None:
    now = time.time()
    short_rich = make_account("a", short_used_pct=0, weekly_used_pct=80, weekly_resets_at=now + WEEK * 0.9)
    balanced = make_account("b", short_used_pct=30, weekly_used_pct=10, weekly_resets_at=now + WEEK * 0.9)
    assert await pick([short_rich, balanced]) is balanced


async def test_window_about_to_reset_counts_as_nearly_full() -> None:
    now = time.time()
    resetting = make_account("a", short_used_pct=95, short_resets_at=now + 10)
    half = make_account("b", short_used_pct=50, short_resets_at=now + 3600)
    assert await pick([resetting, half]) is resetting
    assert await pick([resetting, half], reset_soon_seconds=0) is half


async def test_priority_first_but_exhausted_accounts_last() -> None:
    low_prio = make_account("a")
    high_prio = make_account("b", short_used_pct=80, priority=1)
    assert await pick([low_prio, high_prio]) is high_prio
    high_prio.primary.used_percent = 100
    assert await pick([low_prio, high_prio]) is low_prio
    low_prio.primary.used_percent = 100
    assert await pick([low_prio, high_prio]) is high_prio  # nothing left anywhere: priority decides


async def test_ties_go_to_the_least_recently_used_then_the_lowest_id() -> None:
    a = make_account("a", last_used_at=200.0)
    b = make_account("b", last_used_at=100.0, short_used_pct=0.4)  # rounds to the same score
    c = make_account("c", last_used_at=100.0)
    assert await pick([a, b, c]) is b
    never = make_account("d")
    assert await pick([a, b, c, never]) is never
    x = make_account("x")
    assert await pick([make_account("y"), x]) is x


async def test_no_candidates() -> None:
    assert await pick([]) is None


@pytest.mark.parametrize("value", [-1, 86401, "soon", True])
def test_bad_reset_soon_seconds(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.select_least_used\] reset_soon_seconds"):
        least_used(reset_soon_seconds=value)


def test_unknown_option() -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) soon; allowed: reset_soon_seconds"):
        least_used(soon=1)
