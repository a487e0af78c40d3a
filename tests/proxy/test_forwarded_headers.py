"""Only the headers the backend needs go upstream on a pooled account, plus the account's credentials."""

from __future__ import annotations

from codexlb.testing.harness import ProxyHarness
from plugins.upstream import FORWARD_PREFIXES, FORWARD_REQUEST
from tests.proxy.conftest import codex_posts, load_fixture, request_headers

TRANSPORT = {"host", "content-length", "content-type", "accept-encoding", "authorization", "chatgpt-account-id"}
"""What the proxy's HTTP client and credentials add to every upstream request."""
CLIENT_SECRETS = {
    "authorization": "Bearer client-secret-token", "x-api-key": "client-api-key", "cookie": "session=client-cookie",
    "proxy-authorization": "Basic Y2xpZW50", "remote-addr": "6.6.6.6", "x-forwarded-for": "6.6.6.6",
    "x-real-ip": "6.6.6.6", "forwarded": "for=6.6.6.6", "chatgpt-account-id": "client-acct",
    "x-stainless-os": "Linux", "openai-organization": "org-client", "te": "trailers",
}


def allowed(name: str) -> bool:
    return name in FORWARD_REQUEST or name.startswith(FORWARD_PREFIXES)


async def test_only_allowlisted_headers_reach_the_upstream(proxy: ProxyHarness) -> None:
    fixture = load_fixture(codex_posts()[0])
    codex = {k: v for k, v in request_headers(fixture).items() if k not in ("content-encoding", "authorization",
                                                                               "chatgpt-account-id")}
    junk = {f"x-junk-{n}": f"value-{n}" for n in range(200)}
    response = await proxy.client.post("/backend-api/codex/responses", json=fixture["body"],
                                       headers={**junk, **CLIENT_SECRETS, **codex})
    assert response.status_code == 200, response.text
    served = proxy.fake.requests_for("responses")[-1]
    names = {name.lower() for name in served.headers.names()}
    assert names - TRANSPORT == {name for name in codex if allowed(name)}
    assert {name for name in codex if not allowed(name)} <= {"content-type"}  # nothing Codex sends is lost
    account = next(a for a in proxy.accounts if a.chatgpt_account_id == served.account_id)
    assert served.headers["authorization"] == f"Bearer {account.access_token}"
    assert served.headers["chatgpt-account-id"] == account.chatgpt_account_id
    assert served.headers["accept-encoding"] == "identity"
    for value in CLIENT_SECRETS.values():
        assert value not in str(served.headers.items)


async def test_older_codex_id_spellings_pass(proxy: ProxyHarness) -> None:
    fixture = load_fixture(codex_posts()[0])
    old = {"session_id": "s-1", "conversation_id": "c-1", "openai-beta": "responses=experimental",
           "x-openai-subagent": "review"}
    response = await proxy.client.post("/backend-api/codex/responses", json=fixture["body"], headers=old)
    assert response.status_code == 200
    served = proxy.fake.requests_for("responses")[-1]
    assert {name: served.headers.get(name) for name in old} == old


async def test_models_request_carries_only_allowlisted_headers(proxy: ProxyHarness) -> None:
    response = await proxy.client.get("/backend-api/codex/models?client_version=0.169.0",
                                      headers={**CLIENT_SECRETS, "originator": "codex_exec", "version": "0.169.0"})
    assert response.status_code == 200
    served = proxy.fake.requests_for("models")[-1]
    sent = {"originator", "version", "accept", "user-agent"}  # the last two are the HTTP client's own
    assert {name.lower() for name in served.headers.names()} - TRANSPORT == sent
