"""Admin changes made on one replica (admin API or CLI) are honoured by every replica within 5 s."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx

from codexlb.testing.fake_upstream import FakeUpstream
from tests.support.cluster import Cluster, Replica, cluster

HONOURED_WITHIN = 5.0
BODY = {"model": "gpt-5.5", "instructions": "", "stream": True, "store": False,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}


async def served_by(replica: Replica, n: int) -> str | None:
    """The label of the account a replica routes a new conversation to, or ``None`` when it has none."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{replica.url}/backend-api/codex/responses",
                                     json={**BODY, "prompt_cache_key": f"probe-{n}"})
    if response.status_code != 200:
        assert response.status_code == 503, response.text
        return None
    assert "response.completed" in response.text
    return response.headers["x-codexlb-account"]


async def everywhere_within(lb: Cluster, expected: str | None, since: float) -> float:
    """Probe every replica directly until each routes to ``expected``; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    probes = 0
    pending = list(lb.replicas)
    while pending:
        probes += 1
        answers = await asyncio.gather(*(served_by(r, probes) for r in pending))
        pending = [r for r, got in zip(pending, answers, strict=True) if got != expected]
        took = loop.time() - since
        assert took <= HONOURED_WITHIN, (f"replicas {[r.index for r in pending]} still route to another account "
                                         f"than {expected} {took:.1f} s after the change")
        if pending:
            await asyncio.sleep(0.2)
    return loop.time() - since


async def cli(lb: Cluster, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "codexlb", *args, cwd=lb.tmp,
                                                env=lb.replicas[0].env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


async def test_pause_resume_remove_add_on_one_replica_reach_all(tmp_path: Path, fake: FakeUpstream,
                                                                database_url: str) -> None:
    loop = asyncio.get_running_loop()
    async with cluster(tmp_path, fake, database_url, start=False) as lb:
        [first] = await lb.seed_accounts(1)
        await lb.start_all()
        async with httpx.AsyncClient(timeout=30) as admin:
            accounts = (await admin.get(f"{lb.replicas[0].url}/api/accounts")).json()["data"]
            account_id = accounts[0]["id"]
            await everywhere_within(lb, "acct1", loop.time())

            await cli(lb, "accounts", "pause", "acct1")  # saved when the command returns
            changed = loop.time()
            await everywhere_within(lb, None, changed)

            changed = loop.time()
            resumed = await admin.patch(f"{lb.replicas[1].url}/api/accounts/{account_id}", json={"status": "active"})
            assert resumed.status_code == 200, resumed.text
            await everywhere_within(lb, "acct1", changed)

            changed = loop.time()
            removed = await admin.delete(f"{lb.replicas[2].url}/api/accounts/{account_id}")
            assert removed.status_code == 200, removed.text
            await everywhere_within(lb, None, changed)

            second = fake.add_account()
            auth = tmp_path / "second-auth.json"
            auth.write_text(json.dumps(second.auth_json()))
            await cli(lb, "accounts", "import", str(auth), "--label", "second")
            changed = loop.time()
            await everywhere_within(lb, "second", changed)
            listed = (await admin.get(f"{lb.replicas[1].url}/api/accounts")).json()["data"]
            assert [a["label"] for a in listed] == ["second"] and first.chatgpt_account_id != second.chatgpt_account_id
