"""Close an idle HTTP/1.1 connection as soon as its client closes it.

Hypercorn 0.18 notices the end of an idle keep-alive connection (the client's FIN) but only tells
the HTTP/1.1 protocol, which ignores it when no request is in progress; the socket then waits in
CLOSE_WAIT, with its tasks, until ``keep_alive_timeout`` (75 s here, longer than nginx's 60 s so
that nginx always closes first). A client that opens and closes many connections would hold a
descriptor and three tasks per connection for that long. :func:`install` makes that event end the
connection, as it does when a request is in progress. It is applied wherever codexlb serves
(``codexlb serve``, and :mod:`codexlb.asgi` under Hypercorn's own command line or its workers).
"""

from __future__ import annotations

from typing import Any

_MARK = "_codexlb_closes_idle_on_eof"


def install() -> None:
    """Patch Hypercorn's HTTP/1.1 protocol once per process (a no-op the second time)."""
    from hypercorn.events import Closed
    from hypercorn.protocol.h11 import H11Protocol

    original = H11Protocol.handle
    if getattr(original, _MARK, False):
        return

    async def handle(self: H11Protocol, event: Any) -> None:
        await original(self, event)
        if isinstance(event, Closed) and self.stream is None:
            await self.send(Closed())  # the server's side closes now, and the idle timer stops

    setattr(handle, _MARK, True)
    H11Protocol.handle = handle  # type: ignore[method-assign]
