"""Token refresh across replicas: one refresh call per account, however many replicas need it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from codexlb.testing.fake_upstream import FakeUpstream
from tests.support.cluster import cluster

BODY = {"model": "gpt-5.5", "instructions": "", "stream": True, "store": False,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}


async def test_one_refresh_per_account_across_three_replicas(tmp_path: Path, fake: FakeUpstream,
                                                             database_url: str) -> None:
    async with cluster(tmp_path, fake, database_url, start=False) as lb:
        accounts = await lb.seed_accounts(3, expired=True)
        first_refresh_tokens = {a.chatgpt_account_id: a.refresh_token for a in accounts}
        await lb.start_all()
        assert fake.refresh_calls == 0  # nothing refreshed before the requests arrive

        async def turn(n: int) -> tuple[int, str, str]:
            body = {**BODY, "prompt_cache_key": f"conversation-{n}"}
            response = await lb.client.post("/backend-api/codex/responses", json=body)
            return response.status_code, response.text, lb.replica_of(response).address

        results = await asyncio.gather(*(turn(n) for n in range(90)))

    assert [status for status, _, _ in results] == [200] * 90, [text[:300] for s, text, _ in results if s != 200]
    assert all("response.completed" in text for _, text, _ in results)
    served = Counter(address for _, _, address in results)
    assert len(served) == 3 and min(served.values()) >= 20, served  # nginx spread them over all three
    tokens = fake.requests_for("token")
    used = Counter((r.json or {}).get("refresh_token") for r in tokens)
    assert all(count == 1 for count in used.values()), "a refresh token was sent twice"
    assert set(used) == set(first_refresh_tokens.values())
    assert {a.chatgpt_account_id: a.refresh_calls for a in accounts} == dict.fromkeys(first_refresh_tokens, 1)
    assert fake.refresh_calls == 3
