"""The real Codex CLI (npm @openai/codex) through the proxy, with an API key and with ChatGPT auth.

``.ci/run`` installs the CLI into ``.ci/node_modules``; elsewhere set ``CODEX_LB_TEST_CODEX_BIN``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from codexlb.testing.harness import ProxyHarness, proxy_server

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ("firewall", "api_keys", "decompress", "select_sticky", "select_least_used", "select_round_robin",
            "upstream", "sse_limit")


def codex_bin() -> str:
    candidates = [os.environ.get("CODEX_LB_TEST_CODEX_BIN", ""), str(ROOT / ".ci/node_modules/.bin/codex"),
                  shutil.which("codex") or ""]
    found = next((c for c in candidates if c and Path(c).exists()), None)
    if found is None:
        pytest.skip("Codex CLI not installed (bash .ci/run installs it; or set CODEX_LB_TEST_CODEX_BIN)")
    return found


def write_config(home: Path, url: str, auth: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f"""model = "gpt-5.5"
model_provider = "codexlb"
[model_providers.codexlb]
name = "codexlb"
base_url = "{url}/backend-api/codex"
wire_api = "responses"
{auth}
[features]
plugins = false
[analytics]
enabled = false
""")


async def run_codex(home: Path, workdir: Path, prompt: str, **env: str) -> tuple[int, str]:
    environ = {"PATH": os.environ.get("PATH", ""), "HOME": str(home.parent), "CODEX_HOME": str(home), **env}
    proc = await asyncio.create_subprocess_exec(
        codex_bin(), "exec", "--skip-git-repo-check", prompt, cwd=workdir, env=environ,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_codex_cli_with_api_key(tmp_path: Path) -> None:
    codex_bin()
    async with proxy_server(tmp_path, pipeline=PIPELINE, api_keys=("sk-test-key",)) as proxy:
        home = tmp_path / "home" / ".codex"
        write_config(home, proxy.url, 'env_key = "CODEXLB_API_KEY"')
        code, out = await run_codex(home, tmp_path, "say hi", CODEXLB_API_KEY="sk-test-key")
        assert code == 0, out
        assert "Hello from the fake Codex upstream" in out
        await second_turn_stays_on_account(proxy)


async def test_codex_cli_with_a_key_from_codexlb_keys_create(tmp_path: Path) -> None:
    codex_bin()
    from tests.keys.test_cli import created_key

    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        key, _ = await created_key(tmp_path, proxy, "create", "codex-laptop", "--limit", "requests=20/day")
        home = tmp_path / "home" / ".codex"
        write_config(home, proxy.url, 'env_key = "CODEXLB_API_KEY"')
        code, out = await run_codex(home, tmp_path, "say hi", CODEXLB_API_KEY=str(key))
        assert code == 0, out
        assert "Hello from the fake Codex upstream" in out
        assert str(key) not in str([dict(r.headers) for r in proxy.fake.requests])
        refused, out = await run_codex(home, tmp_path, "say hi", CODEXLB_API_KEY="sk-clb-not-a-key")
        assert refused != 0


async def second_turn_stays_on_account(proxy: ProxyHarness) -> None:
    served = [r.account_id for r in proxy.fake.requests_for("responses")]
    assert served and len(set(served)) == 1


async def test_codex_cli_with_chatgpt_auth(tmp_path: Path) -> None:
    codex_bin()
    async with proxy_server(tmp_path, pipeline=PIPELINE) as proxy:
        home = tmp_path / "home" / ".codex"
        write_config(home, proxy.url, "requires_openai_auth = true")
        client_account = proxy.fake.add_account()  # the client's own login; the pool's accounts serve
        (home / "auth.json").write_text(json.dumps(client_account.auth_json()))
        code, out = await run_codex(home, tmp_path, "say hi")
        assert code == 0, out
        assert "Hello from the fake Codex upstream" in out
        served = {r.account_id for r in proxy.fake.requests_for("responses")}
        assert served <= {a.chatgpt_account_id for a in proxy.accounts}


async def test_codex_cli_sees_usage_limit_message(tmp_path: Path) -> None:
    codex_bin()
    from codexlb.testing.fake_faults import Fault

    async with proxy_server(tmp_path, pipeline=PIPELINE, accounts=1) as proxy:
        proxy.fake.inject(None, Fault.usage_limit(resets_in_seconds=3600), times=-1)
        home = tmp_path / "home" / ".codex"
        write_config(home, proxy.url, 'env_key = "CODEXLB_API_KEY"')
        code, out = await run_codex(home, tmp_path, "say hi", CODEXLB_API_KEY="x")
        assert code != 0 and "usage limit" in out.lower()
