"""select_sticky: conversation keys, rendezvous placement, low-quota moves, and end-to-end turns."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from codexlb import Attempt, ConfigError
from codexlb.pool import AccountPool
from codexlb.testing import make_account, make_flow
from codexlb.testing.fake_faults import Fault
from codexlb.testing.harness import proxy_server
from codexlb.translate import chat_to_responses, prepare_responses_request
from codexlb.types import Account, AccountStatus
from plugins.select_sticky import SelectSticky, conversation_key

F20 = Path(__file__).parents[1] / "fixtures" / "codex-cli" / "F20-codex-resume-second-turn"
PIPELINE = ("select_sticky", "select_least_used", "select_round_robin", "upstream")
ACCOUNTS = [make_account(f"acct-{n}") for n in range(5)]


def sticky(**options: Any) -> SelectSticky:
    plugin = SelectSticky()
    plugin.configure(options)
    return plugin


def keyed(key: str) -> Any:
    return make_flow(payload={"model": "m", "input": "hi", "prompt_cache_key": key})


def app_with(*accounts: Account) -> Any:
    pool = AccountPool()
    pool.accounts = {a.id: a for a in accounts}
    return SimpleNamespace(pool=pool)


async def place(plugin: SelectSticky, keys: list[str], accounts: list[Account]) -> dict[str, str]:
    out = {}
    for key in keys:
        chosen = await plugin.select_account(keyed(key), accounts, None)
        assert chosen is not None
        out[key] = chosen.id
    return out


# -- keys ------------------------------------------------------------------------------------


def test_key_precedence_body_then_headers_then_input() -> None:
    headers = {"session-id": "s", "thread-id": "t", "conversation_id": "c"}
    assert conversation_key(make_flow(headers=headers, payload={"prompt_cache_key": "p", "input": "x"})) == "p"
    assert conversation_key(make_flow(headers=headers, payload={"input": "x"})) == "s"
    assert conversation_key(make_flow(headers={"thread-id": "t", "conversation_id": "c"}, payload={})) == "t"
    assert conversation_key(make_flow(headers={"session_id": "old"}, payload={})) == "old"
    assert conversation_key(make_flow(headers={"conversation_id": "c"}, payload={"prompt_cache_key": ""})) == "c"
    hashed = conversation_key(make_flow(payload={"input": "x"}))
    assert hashed is not None and len(hashed) == 32
    assert conversation_key(make_flow(payload={"model": "m"})) is None
    assert conversation_key(make_flow(payload={"input": []})) is None


def test_chat_and_responses_shapes_give_the_same_key() -> None:
    chat = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": "hello there"},
                                       {"role": "assistant", "content": "hi"}]}
    translated = prepare_responses_request(chat_to_responses(chat))
    responses = {"model": "m", "instructions": "other", "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}]}
    keys = {conversation_key(make_flow(payload=p)) for p in
            (chat, translated, responses, {"model": "m", "input": "hello there"},
             prepare_responses_request({"model": "m", "input": "hello there"}))}
    assert len(keys) == 1 and None not in keys
    other = conversation_key(make_flow(payload={"model": "m", "input": "something else"}))
    assert other not in keys


def test_later_turns_keep_the_key() -> None:
    first = [{"role": "user", "content": "q1"}]
    second = [*first, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
    assert (conversation_key(make_flow(payload={"messages": first}))
            == conversation_key(make_flow(payload={"messages": second})))


def test_codex_resume_fixture_turns_share_the_session_key() -> None:
    bodies = [load(path)[1] for path in sorted(F20.glob("*.json"))]
    keys = {conversation_key(make_flow(payload=body)) for body in bodies}
    assert keys == {bodies[0]["prompt_cache_key"]}


async def test_no_key_hands_over() -> None:
    flow = make_flow(payload={"model": "m"})
    assert await sticky().select_account(flow, ACCOUNTS, None) is None
    assert str(flow.route) == "sticky:no-key" and flow.session_key is None
    retry = make_flow(payload={"model": "m"})
    retry.set_route("least_used", "fallback-after-429")
    assert await sticky().select_account(retry, ACCOUNTS, None) is None
    assert str(retry.route) == "least_used:fallback-after-429"


async def test_session_key_is_stored_raw() -> None:
    flow = keyed("01a20d4f-8cf7-7583-9757-e13c3c5633a0")
    await sticky().select_account(flow, ACCOUNTS, None)
    assert flow.session_key == "01a20d4f-8cf7-7583-9757-e13c3c5633a0" and str(flow.route) == "sticky:new"


# -- placement -------------------------------------------------------------------------------


KEYS = [f"conversation-{n}" for n in range(1000)]


async def test_distribution_is_roughly_even() -> None:
    counts = Counter((await place(sticky(), KEYS, ACCOUNTS)).values())
    assert set(counts) == {a.id for a in ACCOUNTS}
    assert all(140 <= n <= 260 for n in counts.values()), counts


async def test_removing_an_account_moves_only_its_keys() -> None:
    """Pure rendezvous (``weight_by_quota`` off): placement depends on the key and the accounts only."""
    before = await place(sticky(weight_by_quota=False), KEYS, ACCOUNTS)
    gone = ACCOUNTS[2]
    after = await place(sticky(weight_by_quota=False), KEYS, [a for a in ACCOUNTS if a is not gone])
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == gone.id}
    assert len({after[k] for k in moved}) == 4  # its keys spread over the others


async def test_replicas_agree_whatever_the_candidate_order() -> None:
    one = await place(sticky(), KEYS[:200], ACCOUNTS)
    two = await place(sticky(), KEYS[:200], list(reversed(ACCOUNTS)))
    assert one == two


async def test_hash_is_pinned() -> None:
    """The placement must not change between releases (replicas of mixed versions agree)."""
    chosen = await sticky().select_account(keyed("k"), [make_account("a"), make_account("b")], None)
    assert (chosen.id if chosen else None, SelectSticky()._hash("a", b"k")) == ("a", 13400208998957961596)


async def test_weight_by_quota_favours_fuller_accounts() -> None:
    full, low = make_account("full"), make_account("low", short_used_pct=91)
    counts = Counter((await place(sticky(weight_by_quota=True, min_remaining_pct=0), KEYS, [full, low])).values())
    assert 0.05 <= counts["low"] / len(KEYS) <= 0.15, counts  # weights 10 : 1


# -- usable, moved, low quota ----------------------------------------------------------------


async def ranking(key: str, accounts: list[Account]) -> list[str]:
    plugin, rest, order = sticky(min_remaining_pct=0), list(accounts), []
    while rest:
        chosen = await plugin.select_account(keyed(key), rest, None)
        assert chosen is not None
        order.append(chosen.id)
        rest.remove(chosen)
    return order


async def test_unusable_account_moves_to_next_in_rendezvous_order_and_stays() -> None:
    order = await ranking("conv", ACCOUNTS)
    by_id = {a.id: a for a in ACCOUNTS}
    plugin = sticky()
    flow = keyed("conv")
    assert await plugin.select_account(flow, ACCOUNTS, None) is by_id[order[0]] and str(flow.route) == "sticky:new"
    flow = keyed("conv")
    assert await plugin.select_account(flow, ACCOUNTS, None) is by_id[order[0]] and str(flow.route) == "sticky:hit"
    cooling = by_id[order[0]]
    flow = keyed("conv")
    assert await plugin.select_account(flow, [a for a in ACCOUNTS if a is not cooling], None) is by_id[order[1]]
    assert str(flow.route) == f"sticky:moved-unavailable from={order[0][:8]} to={order[1][:8]}"
    flow = keyed("conv")  # the first account is back; the conversation stays where its cache is
    assert await plugin.select_account(flow, ACCOUNTS, None) is by_id[order[1]] and str(flow.route) == "sticky:hit"


async def test_a_retry_takes_the_next_account() -> None:
    order = await ranking("conv", ACCOUNTS)
    flow = keyed("conv")
    flow.attempts.append(Attempt(order[0], None, 429))
    flow.set_route("sticky", "fallback-after-429")  # the core's reason; it puts it back after the choice
    chosen = await sticky().select_account(flow, [a for a in ACCOUNTS if a.id != order[0]], None)
    assert chosen is not None and chosen.id == order[1]


async def test_low_pinned_account_is_ridden_to_the_end_but_takes_no_new_conversations() -> None:
    accounts = [make_account(a.id) for a in ACCOUNTS]
    order = await ranking("conv", accounts)
    by_id = {a.id: a for a in accounts}
    plugin = sticky()
    assert await plugin.select_account(keyed("conv"), accounts, None) is by_id[order[0]]
    by_id[order[0]].primary.used_percent = 98.5
    flow = keyed("conv")  # what is left still pays for turns: the conversation keeps its cache
    assert await plugin.select_account(flow, accounts, None) is by_id[order[0]] and str(flow.route) == "sticky:hit"
    flow = keyed("conv")  # spent: the pool no longer offers it, the conversation moves once
    assert await plugin.select_account(flow, [a for a in accounts if a.id != order[0]], None) is by_id[order[1]]
    assert str(flow.route) == f"sticky:moved-unavailable from={order[0][:8]} to={order[1][:8]}"
    assert await sticky().select_account(keyed("conv"), accounts, None) is by_id[order[1]]  # new: skips the low one
    by_id[order[1]].secondary.used_percent = 99.0  # the next one is low on its week: skip it too
    assert await sticky().select_account(keyed("conv"), accounts, None) is by_id[order[2]]
    # a window that resets within minutes counts as nearly full: a new placement may use it
    by_id[order[0]].primary.resets_at = time.time() + 30
    for other in order[2:]:
        by_id[other].primary.used_percent = 20.0
    flow = keyed("conv")
    assert await sticky().select_account(flow, accounts, None) is by_id[order[0]]
    assert str(flow.route) == "sticky:new"


async def test_everyone_low_keeps_the_plain_ranking() -> None:
    accounts = [make_account(f"low-{n}", short_used_pct=99.5) for n in range(3)]
    order = await ranking("conv", accounts)
    flow = keyed("conv")
    assert (await sticky().select_account(flow, accounts, None)).id == order[0]  # type: ignore[union-attr]
    assert str(flow.route) == "sticky:new"


async def test_min_remaining_zero_never_moves() -> None:
    accounts = [make_account("a", short_used_pct=100), make_account("b")]
    order = await ranking("conv", accounts)
    chosen = await sticky(min_remaining_pct=0).select_account(keyed("conv"), accounts, None)
    assert chosen is not None and chosen.id == order[0]


@pytest.mark.parametrize(("options", "message"), [
    ({"min_remaining_pct": 101}, r"\[plugins.select_sticky\] min_remaining_pct"),
    ({"min_remaining_pct": "two"}, r"\[plugins.select_sticky\] min_remaining_pct"),
    ({"weight_by_quota": "maybe"}, r"\[plugins.select_sticky\] weight_by_quota"),
    ({"min_remaining": 1}, r"\[plugins.select_sticky\] unknown option\(s\) min_remaining"),
])
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sticky(**options)


def test_options_accept_env_strings() -> None:
    plugin = sticky(min_remaining_pct=5, weight_by_quota="true")
    assert plugin.min_remaining_pct == 5.0 and plugin.weight_by_quota is True


# -- end to end ------------------------------------------------------------------------------


def load(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers (minus transport and auth ones) and body of a captured Codex request."""
    record = json.loads(path.read_text())
    drop = {"host", "content-length", "authorization", "chatgpt-account-id", "connection"}
    headers = dict(line.split(": ", 1) for line in record["headers"])
    return {k: v for k, v in headers.items() if k.lower() not in drop}, record["body"]


async def turn(proxy: Any, request: tuple[dict[str, str], dict[str, Any]]) -> tuple[str, str]:
    headers, body = request
    response = await proxy.client.post("/backend-api/codex/responses", headers=headers, json=body)
    assert response.status_code == 200, response.text
    assert "response.completed" in response.text
    return response.headers["x-codexlb-account"], response.headers["x-codexlb-route"]


async def test_conversation_stays_and_moves_only_when_exhausted(tmp_path: Path) -> None:
    first, second = (load(path) for path in sorted(F20.glob("*.json")))
    async with proxy_server(tmp_path, accounts=3, pipeline=PIPELINE) as proxy:
        fake_of = {f"acct{n}": fake for n, fake in enumerate(proxy.accounts, 1)}
        home, route = await turn(proxy, first)
        assert route == "sticky:new"
        for _ in range(3):
            assert await turn(proxy, second) == (home, "sticky:hit")

        proxy.fake.inject(fake_of[home].chatgpt_account_id, Fault.usage_limit(resets_at=int(time.time()) + 3600))
        new, route = await turn(proxy, second)
        ids = {a.label: a.id for a in proxy.lb.pool.all()}
        assert new != home and route == f"sticky:fallback-after-429 from={ids[home][:8]} to={ids[new][:8]}"
        for _ in range(3):  # the home account cools down; the conversation stays on the new one
            assert await turn(proxy, second) == (new, "sticky:hit")
        served = Counter(r.account_id for r in proxy.fake.requests_for("responses"))
        assert served[fake_of[home].chatgpt_account_id] == 5 and served[fake_of[new].chatgpt_account_id] == 4
        assert len(served) == 2  # the third account never saw this conversation


async def test_requests_without_a_key_go_to_least_used(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=2, pipeline=PIPELINE) as proxy:
        response = await proxy.client.post("/backend-api/codex/responses", json={
            "model": "gpt-5.5", "stream": True, "store": False, "input": []})
        assert response.status_code == 200, response.text
        assert response.headers["x-codexlb-route"] == "least_used:most-remaining"


async def test_moved_conversation_stays_after_home_recovers() -> None:
    from types import SimpleNamespace

    from codexlb.testing import make_account as account
    from codexlb.testing import make_flow as flow_for
    from plugins.select_sticky import SelectSticky as Sticky

    accounts = [account(x) for x in "abcde"]
    app = SimpleNamespace(pool=SimpleNamespace(accounts={a.id: a for a in accounts}))

    def turn() -> object:
        return flow_for(payload={"model": "m", "input": "hi", "prompt_cache_key": "conv-pin"})

    for max_pins, back_home in ((100, False), (0, True)):
        plugin = Sticky()
        plugin.configure({"max_pins": max_pins})
        home = await plugin.select_account(turn(), accounts, app)
        moved_flow = turn()
        moved = await plugin.select_account(moved_flow, [a for a in accounts if a is not home], app)
        assert moved is not home
        assert str(moved_flow.route) == ("sticky:new" if back_home else
                                    f"sticky:moved-unavailable from={home.id[:8]} to={moved.id[:8]}")
        again = turn()
        chosen = await plugin.select_account(again, accounts, app)  # home is usable again
        assert (chosen is home) is back_home
        assert str(again.route) == ("sticky:new" if back_home else "sticky:hit")


async def test_moved_conversation_stays_on_a_low_account_while_it_is_usable() -> None:
    from types import SimpleNamespace

    from codexlb.testing import make_account as account
    from codexlb.testing import make_flow as flow_for
    from plugins.select_sticky import SelectSticky as Sticky

    accounts = [account(x) for x in "abc"]
    app = SimpleNamespace(pool=SimpleNamespace(accounts={a.id: a for a in accounts}))
    plugin = Sticky()
    body = {"model": "m", "input": "hi", "prompt_cache_key": "conv-low"}
    home = await plugin.select_account(flow_for(payload=body), accounts, app)
    moved = await plugin.select_account(flow_for(payload=body), [a for a in accounts if a is not home], app)
    moved.primary.used_percent = 99.5
    flow = flow_for(payload=body)
    assert await plugin.select_account(flow, accounts, app) is moved and str(flow.route) == "sticky:hit"
    assert home is not moved  # it stays where its cache is; it does not go back either


def test_max_pins_validated() -> None:
    import pytest as _pytest

    from codexlb.errors import ConfigError
    from plugins.select_sticky import SelectSticky as Sticky

    with _pytest.raises(ConfigError, match="max_pins"):
        Sticky().configure({"max_pins": -1})


async def test_pins_warmed_from_the_request_log_after_a_restart(tmp_path: Path) -> None:
    from plugins.select_sticky import SelectSticky as Sticky

    body = {"model": "gpt-5.5", "stream": True, "store": False, "prompt_cache_key": "conv-restart",
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}
    async with proxy_server(tmp_path, accounts=3, pipeline=(*PIPELINE, "log_db")) as proxy:
        first = await proxy.client.post("/backend-api/codex/responses", json=body)
        home = first.headers["x-codexlb-account"]
        fake_of = {f"acct{n}": fake for n, fake in enumerate(proxy.accounts, 1)}
        proxy.fake.inject(fake_of[home].chatgpt_account_id, Fault.usage_limit(resets_at=int(time.time()) + 60))
        moved = await proxy.client.post("/backend-api/codex/responses", json=body)
        new = moved.headers["x-codexlb-account"]
        assert new != home
        await proxy.settle()  # both turns are in the request log
        for account in proxy.lb.pool.all():  # the home account recovered
            account.cooldown_until, account.status = 0.0, AccountStatus.ACTIVE
        restarted = Sticky()
        restarted.configure({})
        await restarted.startup(proxy.lb)
        flow = make_flow(payload=body)
        chosen = await restarted.select_account(flow, proxy.lb.pool.usable(), proxy.lb)
        assert chosen is not None and chosen.label == new and str(flow.route) == "sticky:hit"
