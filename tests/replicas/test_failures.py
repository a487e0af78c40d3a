"""Replica failures: a SIGKILLed replica loses only its own streams; a replica with another key refuses."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from codexlb.accounts.storage import open_store
from codexlb.flow import session_key_hash
from codexlb.testing.fake_upstream import FakeUpstream
from tests.support.cluster import cluster, poll

BODY = {"model": "gpt-5.5", "instructions": "", "stream": True, "store": False,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}


@pytest.fixture(name="slow_fake")
async def _slow_fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(events=20, event_delay=0.15) as fake:  # a turn streams for ~3 s
        yield fake


async def test_a_killed_replica_fails_only_its_streams_and_rejoins(tmp_path: Path, slow_fake: FakeUpstream,
                                                                     database_url: str) -> None:
    fake = slow_fake
    async with cluster(tmp_path, fake, database_url, start=False) as lb:
        await lb.seed_accounts(2)
        await lb.start_all()
        victim = lb.replicas[1]
        started = asyncio.Event()
        first_chunks: list[str] = []

        async def stream(n: int) -> tuple[str, bool]:
            """One streamed turn: (replica address, whether it completed)."""
            body = b""
            key = f"stream-{n}"
            try:
                async with lb.client.stream("POST", "/backend-api/codex/responses",
                                            json={**BODY, "prompt_cache_key": key}) as response:
                    assert response.status_code == 200
                    address = lb.replica_of(response).address
                    async for chunk in response.aiter_bytes():
                        if not body:
                            first_chunks.append(key)
                            if len(first_chunks) == 9:
                                started.set()
                        body += chunk
            except httpx.TransportError:
                return address, False
            return address, b"response.completed" in body

        streams = [asyncio.ensure_future(stream(n)) for n in range(9)]
        await asyncio.wait_for(started.wait(), 30)  # all nine are streaming
        await lb.kill(victim.index)
        outcomes = await asyncio.gather(*streams)

        on_victim = [done for address, done in outcomes if address == victim.address]
        survivors = [(n, address) for n, (address, done) in enumerate(outcomes) if address != victim.address]
        assert len(on_victim) == 3 and not any(on_victim), outcomes  # its own streams were cut
        assert all(outcomes[n][1] for n, _ in survivors), outcomes  # every other stream completed

        after = await asyncio.gather(*(lb.client.post("/backend-api/codex/responses",
                                                     json={**BODY, "prompt_cache_key": f"after-{n}"})
                                       for n in range(9)))
        assert [r.status_code for r in after] == [200] * 9
        assert {lb.replica_of(r).address for r in after} == {lb.replicas[0].address, lb.replicas[2].address}

        expected = {session_key_hash(f"stream-{n}") for n, _ in survivors}
        expected |= {session_key_hash(f"after-{n}") for n in range(9)}

        async def logged() -> bool:
            rows = await lb.request_log()
            return expected <= {r["session_key_hash"] for r in rows if r["status"] == 200}

        await poll(logged, 10, "the survivors' request-log rows")

        async with open_store(lb.settings()) as store:  # accounts and tokens intact, readable with the key
            rows = await store.list()
        assert {r.chatgpt_account_id for r in rows} == {a.chatgpt_account_id for a in lb.accounts}
        assert {r.access_token for r in rows} == {a.access_token for a in lb.accounts}
        assert {r.refresh_token for r in rows} == {a.refresh_token for a in lb.accounts}

        await lb.start_replica(victim.index)

        async def rejoined() -> bool:
            response = await lb.client.post("/backend-api/codex/responses", json=BODY)
            assert response.status_code == 200
            return lb.replica_of(response).address == victim.address

        # nginx tries it again after its fail_timeout (10 s); each probe is a ~3 s turn of the slow fake
        await poll(rejoined, 60, "nginx to send requests to the restarted replica")


async def test_a_replica_with_another_encryption_key_refuses_to_start(tmp_path: Path, fake: FakeUpstream,
                                                                       database_url: str) -> None:
    async with cluster(tmp_path, fake, database_url, start=False) as lb:
        await lb.seed_accounts(1)
        other_key = tmp_path / "other.key"
        other_key.write_bytes(Fernet.generate_key())
        other_key.chmod(0o600)
        env = {**lb.replicas[0].env, "CODEX_LB_ENCRYPTION_KEY_FILE": str(other_key)}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "codexlb", "serve", cwd=tmp_path, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2
        message = err.decode()
        assert f"encryption key file {other_key} does not match the data in the database" in message
        assert "encrypted with a different key" in message and "Traceback" not in message
        assert b"listening on" not in out
        async with open_store(lb.settings()) as store:  # nothing was written with the other key
            [row] = await store.list()
        assert row.access_token == lb.accounts[0].access_token
        assert os.stat(other_key).st_size == 44
