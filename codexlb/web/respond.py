"""A flow's answer as a Quart response; ``flow_done`` runs after its last byte."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from quart import Response, current_app
from werkzeug.datastructures import Headers

from codexlb.app import CodexLB
from codexlb.flow import Flow, ProxyResponse


def to_quart(lb: CodexLB, flow: Flow, result: ProxyResponse) -> Response:
    """Turn the pipeline's answer into a Quart response; ``flow_done`` runs after the last byte."""
    flow.status = result.status
    headers = list(result.headers)
    if flow.account is not None and lb.settings.route_headers:
        headers.append(("x-codexlb-account", flow.account.label))
    if flow.route is not None and lb.settings.route_headers:
        headers.append(("x-codexlb-route", str(flow.route)))
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
