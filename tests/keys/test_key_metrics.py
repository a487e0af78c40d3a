"""The metrics plugin's per-key series carry the key's name (never the key) for every admitted flow."""

from __future__ import annotations

from pathlib import Path

from codexlb.testing.harness import proxy_server
from codexlb.testing.secrets import register_secret
from tests.keys.conftest import BODY, PATH, bearer, make_key
from tests.plugins.test_metrics import settled, value

PIPELINE = ("firewall", "api_keys", "select_round_robin", "upstream", "sse_limit", "metrics")
STATIC = "sk-static-metrics-key-00000000000000001"
register_secret(STATIC)


async def test_key_series_are_labelled_by_key_name(tmp_path: Path) -> None:
    async with proxy_server(tmp_path, accounts=1, pipeline=PIPELINE, api_keys=(STATIC,)) as proxy:
        alice = await make_key(proxy, "alice")
        for _ in range(2):
            assert (await proxy.client.post(PATH, json=BODY, headers=bearer(alice))).status_code == 200
        assert (await proxy.client.post(PATH, json=BODY, headers={"x-api-key": STATIC})).status_code == 200
        assert (await proxy.client.post(PATH, json=BODY)).status_code == 401  # no key: no key series
        text = await settled(proxy)
        assert value(text, "codexlb_key_requests_total", key="alice") == 2
        assert value(text, "codexlb_key_requests_total", key="CODEX_LB_API_KEYS") == 1
        assert (value(text, "codexlb_key_tokens_total", key="alice", kind="output") or 0) > 0
        keys = {line.split('key="', 1)[1].split('"', 1)[0] for line in text.splitlines()
                if line.startswith("codexlb_key_requests_total{")}
        assert keys == {"alice", "CODEX_LB_API_KEYS"}
        assert alice not in text and STATIC not in text
