"""select_round_robin: the last-resort strategy takes the candidates in turn."""

from __future__ import annotations

from codexlb.testing import make_account, make_flow
from plugins.select_round_robin import SelectRoundRobin


async def test_cycles_by_id_whatever_the_candidate_order() -> None:
    plugin = SelectRoundRobin()
    a, b, c = make_account("a"), make_account("b"), make_account("c")
    picks = [await plugin.select_account(make_flow(), [c, a, b]) for _ in range(4)]
    assert picks == [a, b, c, a]


async def test_continues_after_the_last_pick_when_candidates_change() -> None:
    plugin = SelectRoundRobin()
    a, b, c = make_account("a"), make_account("b"), make_account("c")
    assert await plugin.select_account(make_flow(), [a, b, c]) is a
    assert await plugin.select_account(make_flow(), [a, c]) is c  # b is cooling down
    assert await plugin.select_account(make_flow(), [a, b, c]) is a


async def test_no_candidates() -> None:
    assert await SelectRoundRobin().select_account(make_flow(), []) is None


async def test_route_reasons() -> None:
    plugin, account = SelectRoundRobin(), make_account("a")
    flow = make_flow()
    await plugin.select_account(flow, [account])
    assert str(flow.route) == "round_robin:next"
    flow.set_route("sticky", "no-key")  # a strategy before it handed over
    await plugin.select_account(flow, [account])
    assert str(flow.route) == "round_robin:next"
