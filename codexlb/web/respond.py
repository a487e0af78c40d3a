"""A flow's answer as a Quart response; ``flow_done`` runs after its last byte."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from quart import Response
from werkzeug.datastructures import Headers

from codexlb.app import CodexLB
from codexlb.flow import Flow, ProxyResponse


def to_quart(lb: CodexLB, flow: Flow, result: ProxyResponse) -> Response:
    """Turn the pipeline's answer into a Quart response; ``flow_done`` runs after the last byte."""
    flow.status = result.status
    headers = list(result.headers)
    if lb.settings.route_headers:
        if flow.account is not None:
            headers.append(("x-codexlb-account", flow.account.label))
        if flow.route is not None:
            headers.append(("x-codexlb-route", str(flow.route)))
    if isinstance(result.body, bytes):
        flow.first_byte_at = flow.first_byte_at or time.time()
        flow.finished_at = time.time()
        flow_done_later(lb, flow)
        return Response(result.body, status=result.status, headers=Headers(headers))
    response = Response(_finishing(lb, flow, result.body), status=result.status, headers=Headers(headers))
    response.timeout = None
    return response


def flow_done_later(lb: CodexLB, flow: Flow) -> None:
    """Run ``flow_done`` as a background task of the Quart app (awaited when the server shuts down).

    The task is added to the app's own set, as ``Quart.add_background_task`` does, without the
    app context that costs several microseconds a request (``flow_done`` gets ``app`` as an
    argument, and plugins do not use Quart's globals). Nothing is scheduled when no plugin
    implements ``flow_done``.
    """
    if not lb.hooks.implemented("flow_done"):
        return
    assert lb.quart is not None
    tasks = lb.quart.background_tasks
    task = asyncio.get_running_loop().create_task(lb.hooks.flow_done(flow))
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _finishing(lb: CodexLB, flow: Flow, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            yield chunk
    finally:
        flow.finished_at = time.time()
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
        flow_done_later(lb, flow)
