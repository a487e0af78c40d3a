"""The proxied routes as Quart views: each admitted :class:`Flow` (see :mod:`codexlb.web.admission`)
runs through the pipeline. The POST routes are served in front of Quart by
:mod:`codexlb.web.fast_path`; their views here answer what it leaves to Quart (HTTP/1.0, a root path).

The model routes answer from the model registry (``app.models``) when it holds a list; a Codex
client newer than ``MODEL_REGISTRY_CLIENT_VERSION`` goes to the upstream first (the cache may lack
models it can use) and gets the cache only when that fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from quart import Blueprint, Response, current_app, request

from codexlb.app import CodexLB, lb_of
from codexlb.flow import Flow, ProxyResponse
from codexlb.web import too_large
from codexlb.web.admission import admitted_flow
from codexlb.web.respond import to_quart

blueprint = Blueprint("proxy", __name__)
DISCARD_IDLE_SECONDS = 1.0
"""How long to wait for more of an oversized body before answering 413 anyway."""

ROUTES = {
    ("POST", "/backend-api/codex/responses"): "codex_responses",
    ("POST", "/backend-api/codex/responses/compact"): "codex_compact",
    ("POST", "/v1/responses"): "responses",
    ("POST", "/v1/chat/completions"): "chat_completions",
    ("GET", "/v1/models"): "models",
    ("GET", "/backend-api/codex/models"): "codex_models",
}


async def read_body(limit: int) -> bytes | None:
    """The raw body, or ``None`` when it is larger than ``limit``.

    An oversized body is read on and thrown away (up to twice the limit, while the client keeps
    sending), so a client still uploading gets the 413 instead of a reset connection.
    """
    declared = request.content_length
    if declared is not None and declared > 2 * limit:
        return None
    parts, size = [], 0
    chunks = request.body.__aiter__()
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            await _discard(chunks, 2 * limit - size)
            return None
        parts.append(chunk)
    return b"".join(parts)


async def _discard(chunks: AsyncIterator[bytes], budget: int) -> None:
    while budget > 0:
        try:
            async with asyncio.timeout(DISCARD_IDLE_SECONDS):
                budget -= len(await chunks.__anext__())
        except (StopAsyncIteration, TimeoutError):
            return


async def handle() -> Response:
    """Read the admitted flow's body and run it through the pipeline."""
    lb = lb_of(current_app)
    flow = admitted_flow()
    return to_quart(lb, flow, await _proxied(lb, flow))


async def _proxied(lb: CodexLB, flow: Flow) -> ProxyResponse:
    """The pipeline's answer for an admitted flow (413 when its body is too large)."""
    body = await read_body(lb.settings.max_decompressed_body_bytes)
    if body is None:
        flow.reject(413, "payload_too_large", too_large(lb.settings.max_decompressed_body_bytes))
        assert flow.response is not None
        return flow.response
    flow.request.body = body
    return await lb.pipeline.run(flow)


async def handle_models(endpoint: str) -> Response:
    """Model lists from the registry cache when it has one, else (or for newer clients) from upstream."""
    lb = lb_of(current_app)
    flow = admitted_flow()
    registry = lb.models
    if not registry.ready:
        return to_quart(lb, flow, await _proxied(lb, flow))
    client_version = request.args.get("client_version")
    if_none_match = request.headers.get("if-none-match")
    if endpoint == "codex_models" and registry.newer_than_cache(client_version):
        live = await _proxied(lb, flow)  # the cache may lack models this newer client can use
        if live.status < 500:
            return to_quart(lb, flow, live)
        flow.account = None  # the answer comes from the cache, not from the account that failed
        flow.set_route("model_registry", "fallback")
    else:
        flow.set_route("model_registry", "cache")
    result = (registry.openai_response() if endpoint == "models"
              else registry.codex_response(client_version, if_none_match))
    flow.response = result
    return to_quart(lb, flow, result)


def _view(endpoint: str) -> Callable[[], Awaitable[Response]]:
    """The view of one route: the model lists have their own, every other route runs :func:`handle`."""
    if endpoint not in ("models", "codex_models"):
        return handle

    async def view() -> Response:
        return await handle_models(endpoint)

    view.__name__ = endpoint
    return view


for (method, path), name in ROUTES.items():
    blueprint.add_url_rule(path, name, _view(name), methods=[method])
