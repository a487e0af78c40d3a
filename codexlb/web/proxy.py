"""The proxied routes: each request becomes a :class:`Flow` run through the pipeline.

The model routes answer from the model registry (``app.models``) when it holds a list, after the
usual admission check; a Codex client newer than ``MODEL_REGISTRY_CLIENT_VERSION`` goes to the
upstream first (the cache may lack models it can use) and gets the cache only when that fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from quart import Blueprint, Response, current_app, request
from werkzeug.datastructures import Headers

from codexlb.app import CodexLB, lb_of
from codexlb.flow import Flow, ProxyRequest, ProxyResponse

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


def make_flow(endpoint: str) -> Flow:
    """A flow for the current Quart request (body not read yet)."""
    client = request.scope.get("client") or ("127.0.0.1", 0)
    headers = {k.lower(): v for k, v in request.headers.items()}
    peer = str(client[0])
    return Flow(ProxyRequest(method=request.method, path=request.path, endpoint=endpoint, headers=headers,
                             query=request.query_string.decode("latin-1"), peer_ip=peer, client_ip=peer))


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


async def handle(endpoint: str) -> Response:
    lb = lb_of(current_app)
    flow = make_flow(endpoint)
    result = await lb.pipeline.admit(flow)
    if result is None:
        body = await read_body(lb.settings.max_decompressed_body_bytes)
        if body is None:
            flow.reject(413, "payload_too_large",
                        f"request body exceeds {lb.settings.max_decompressed_body_bytes} bytes "
                        "(CODEX_LB_MAX_DECOMPRESSED_BODY_BYTES)")
            result = flow.response
        else:
            flow.request.body = body
            result = await lb.pipeline.run(flow)
    assert result is not None
    return to_quart(lb, flow, result)


def to_quart(lb: CodexLB, flow: Flow, result: ProxyResponse) -> Response:
    """Turn the pipeline's answer into a Quart response; ``flow_done`` runs after the last byte."""
    flow.status = result.status
    headers = list(result.headers)
    if flow.account is not None and lb.settings.route_headers:
        headers.append(("x-codexlb-account", flow.account.label))
    if flow.route and lb.settings.route_headers:
        headers.append(("x-codexlb-route", flow.route))
    if isinstance(result.body, bytes):
        flow.first_byte_at = flow.first_byte_at or time.time()
        flow.finished_at = time.time()
        current_app.add_background_task(lb.hooks.flow_done, flow)
        return Response(result.body, status=result.status, headers=Headers(headers))
    response = Response(_finishing(lb, flow, result.body), status=result.status, headers=Headers(headers))
    response.timeout = None
    return response


async def _finishing(lb: CodexLB, flow: Flow, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            yield chunk
    finally:
        flow.finished_at = time.time()
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
        lb.quart.add_background_task(lb.hooks.flow_done, flow)  # type: ignore[union-attr]


async def handle_models(endpoint: str) -> Response:
    """Model lists from the registry cache when it has one, else (or for newer clients) from upstream."""
    lb = lb_of(current_app)
    registry = lb.models
    if not registry.ready:
        return await handle(endpoint)
    client_version = request.args.get("client_version")
    if_none_match = request.headers.get("if-none-match")
    if endpoint == "codex_models" and registry.newer_than_cache(client_version):
        live = await handle(endpoint)  # the cache may lack models this newer client can use
        if live.status_code < 500:
            return live
        cached = registry.codex_response(client_version, if_none_match)
        route = [("x-codexlb-route", "model_registry:fallback")] if lb.settings.route_headers else []
        return Response(cached.body, status=cached.status, headers=Headers([*cached.headers, *route]))
    flow = make_flow(endpoint)
    result = await lb.pipeline.admit(flow)
    if result is None:
        flow.route = "model_registry:cache"
        result = (registry.openai_response() if endpoint == "models"
                  else registry.codex_response(client_version, if_none_match))
        flow.response = result
    return to_quart(lb, flow, result)


def _view(endpoint: str):
    async def view() -> Response:
        if endpoint in ("models", "codex_models"):
            return await handle_models(endpoint)
        return await handle(endpoint)

    view.__name__ = endpoint
    return view


for (method, path), name in ROUTES.items():
    blueprint.add_url_rule(path, name, _view(name), methods=[method])
