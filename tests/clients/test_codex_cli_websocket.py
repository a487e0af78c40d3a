"""The real Codex CLI over the proxy's WebSocket transport (a provider with ``supports_websockets``).

A tool-call turn makes ``codex exec`` send several ``response.create`` frames on one socket: the
prewarm, the prompt, then ``previous_response_id`` with only the ``function_call_output``.
"""

from __future__ import annotations

from pathlib import Path

from codexlb import Flow, hookimpl
from codexlb.testing.harness import proxy_server
from tests.clients.test_codex_cli import PIPELINE, codex_bin, run_codex, write_config


class Flows:
    def __init__(self) -> None:
        self.done: list[Flow] = []

    @hookimpl
    async def flow_done(self, flow: Flow) -> None:
        self.done.append(flow)


async def test_codex_exec_multi_turn_over_the_websocket(tmp_path: Path) -> None:
    codex_bin()
    flows = Flows()
    async with proxy_server(tmp_path, pipeline=PIPELINE, api_keys=("sk-test-key",), plugins=[flows]) as proxy:
        home = tmp_path / "home" / ".codex"
        write_config(home, proxy.url, 'env_key = "CODEXLB_API_KEY"\nsupports_websockets = true')
        code, out = await run_codex(home, tmp_path, "call tool exec_command", CODEXLB_API_KEY="sk-test-key")
        assert code == 0, out
        assert "Falling back" not in out and "426" not in out, out
        turns = [f for f in flows.done if f.request.endpoint == "codex_websocket"]
        assert len(turns) >= 2 and all(f.status == 200 for f in turns), [(f.status, f.error_code) for f in turns]
        assert not [f for f in flows.done if f.request.endpoint == "codex_responses"]  # no HTTP fallback
        served = proxy.fake.requests_for("responses")
        assert len(served) == len(turns) and len({r.account_id for r in served}) == 1
        last = served[-1].json["input"]
        assert last[-1]["type"] == "function_call_output" and last[-2]["type"] == "function_call"
        assert any(i.get("role") == "developer" for i in last)  # the whole context, rebuilt by the proxy
