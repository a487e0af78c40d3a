"""A flow's answer as a Quart response; ``flow_done`` runs after its last byte (:mod:`codexlb.finisher`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import TracebackType

from quart import Response
from quart.wrappers.response import IterableBody
from werkzeug.datastructures import Headers

from codexlb.app import CodexLB
from codexlb.flow import Flow, ProxyResponse


def answer_headers(lb: CodexLB, flow: Flow, result: ProxyResponse) -> list[tuple[str, str]]:
    """The answer's headers, with the route headers when ``ROUTE_HEADERS`` is on."""
    headers = list(result.headers)
    if lb.settings.route_headers:
        if flow.account is not None:
            headers.append(("x-codexlb-account", flow.account.label))
        if flow.route is not None:
            headers.append(("x-codexlb-route", str(flow.route)))
    return headers


def finish_now(lb: CodexLB, flow: Flow) -> None:
    """A flow whose answer is bytes ends as it is sent: stamped and queued for ``flow_done``."""
    now = time.time()
    flow.first_byte_at = flow.first_byte_at or now
    flow.finished_at = now
    lb.finisher.add(flow)


def to_quart(lb: CodexLB, flow: Flow, result: ProxyResponse) -> Response:
    """Turn the pipeline's answer into a Quart response; ``flow_done`` runs after the last byte."""
    flow.status = result.status
    headers = answer_headers(lb, flow, result)
    if isinstance(result.body, bytes):
        finish_now(lb, flow)
        return Response(result.body, status=result.status, headers=Headers(headers))
    response = Response(FlowBody(lb, flow, result.body), status=result.status, headers=Headers(headers))
    response.timeout = None
    return response


class FlowBody(IterableBody):
    """A streamed answer's body for Quart: the stream itself, and when Quart is done with it (last
    byte sent, client gone, or error) the flow is finished and queued for ``flow_done``.

    Quart enters and exits this body around sending it, so no generator layer is needed for that.
    """

    def __init__(self, lb: CodexLB, flow: Flow, body: AsyncIterator[bytes]) -> None:
        super().__init__(body)
        self.lb, self.flow = lb, flow

    async def __aexit__(self, exc_type: type | None, exc_value: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.flow.finished_at = time.time()
        try:
            await super().__aexit__(exc_type, exc_value, tb)  # type: ignore[arg-type]
        finally:
            self.lb.finisher.add(self.flow)
