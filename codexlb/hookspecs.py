"""Every hook a codexlb plugin can implement, grouped by phase.

Implementations may accept fewer arguments than the spec (pluggy's opt-in arguments). Async
hooks are dispatched by :mod:`codexlb.hooks`, never through ``pm.hook`` directly. The full
reference with examples is ``docs/hooks.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from quart import Blueprint

    from codexlb.answer_stream import StreamFilter
    from codexlb.errors import FlowError
    from codexlb.flow import Flow, ProxyResponse
    from codexlb.settings import Settings
    from codexlb.types import Account, AppView

PROJECT = "codexlb"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# ---- load ------------------------------------------------------------------------------------


@hookspec
def configure(config: Mapping[str, Any], settings: Settings) -> None:
    """Read this plugin's own options once, before serving.

    :param config: the plugin's ``[plugins.<name>]`` table (empty when absent).
    :param settings: the validated core settings.

    Raise :class:`codexlb.ConfigError` for a bad option; start-up stops with exit status 2.

    Example::

        @hookimpl
        def configure(config, settings):
            self.limit = int(config.get("limit", 10))

    .. versionadded:: 0.1
    """


@hookspec
def register_routes(app: AppView) -> Blueprint | list[Blueprint] | None:
    """Contribute Quart blueprints (admin pages, extra APIs), collected before serving.

    The proxied POST routes (``/backend-api/codex/responses``, ``/v1/responses``, ...) are served in
    front of Quart, so an app-wide ``before_request`` a blueprint installs does not see them: act on
    proxied requests with the request hooks (``admit_request`` and on).

    Example::

        @hookimpl
        def register_routes(app):
            bp = Blueprint("hello", __name__)
            bp.add_url_rule("/hello", "hello", lambda: {"hello": "world"})
            return bp

    .. versionadded:: 0.1
    """


# ---- lifespan --------------------------------------------------------------------------------


@hookspec
async def startup(app: AppView) -> None:
    """Open resources (clients, tasks) after the database is ready and before serving.

    Called for every plugin in order; an exception aborts start-up.

    Example::

        @hookimpl
        async def startup(app):
            self.client = httpx.AsyncClient()

    .. versionadded:: 0.1
    """


@hookspec
async def shutdown(app: AppView) -> None:
    """Release resources; called in reverse order. Errors are logged and swallowed.

    Example::

        @hookimpl
        async def shutdown(app):
            await self.client.aclose()

    .. versionadded:: 0.1
    """


# ---- request phase ---------------------------------------------------------------------------


@hookspec
async def admit_request(flow: Flow, app: AppView) -> None:
    """Decide whether a request may enter, before its body is read.

    Set ``flow.request.client_ip``; call ``flow.reject(...)`` to refuse. Stops at the first plugin
    that sets ``flow.response``. An exception refuses the request (fail closed).

    Called for every client route (proxy, model lists, ``wham/*``, the WebSocket handshake, plugin
    routes) before its view runs; not for ``/api/*``, ``/healthz``, ``/readyz``. Also called for
    every turn of a WebSocket connection (``POST``, with ``flow.handshake`` set to the admitted
    handshake, whose headers the turn carries minus what admission removed, e.g. a client key;
    stash what a turn needs on the handshake flow). A plugin that
    enforces client keys or an allowlist says so with an ``enforces_admission`` attribute set by
    ``configure``: a collection of ``"api_keys"`` (a key is required whenever any exists, in
    ``CODEX_LB_API_KEYS`` or the database) and/or ``"client_networks"`` (clients outside an
    allowlist are refused). A non-loopback bind is refused at start unless an allowlist or at
    least one key is enforced that way.

    Example::

        @hookimpl
        async def admit_request(flow, app):
            if flow.request.headers.get("x-team") != "blue":
                flow.reject(403, "forbidden", "only team blue may use this pool")

    .. versionadded:: 0.1
    """


@hookspec
async def decode_request(flow: Flow, app: AppView) -> None:
    """Decode the raw body (``flow.request.body``), e.g. undo ``Content-Encoding``.

    Runs after the body is read and before it is parsed as JSON. Stops when
    ``flow.response`` is set.

    Example::

        @hookimpl
        async def decode_request(flow, app):
            if flow.request.headers.get("content-encoding") == "gzip":
                flow.request.body = gzip.decompress(flow.request.body)

    .. versionadded:: 0.1
    """


@hookspec
async def transform_request(flow: Flow, app: AppView) -> None:
    """Change the parsed payload (``flow.request.payload``) before routing.

    Call ``flow.request.set_payload(...)`` or set ``payload_modified`` after changing it in
    place. Stops when ``flow.response`` is set.

    Example::

        @hookimpl
        async def transform_request(flow, app):
            flow.request.payload.setdefault("service_tier", "default")
            flow.request.payload_modified = True

    .. versionadded:: 0.1
    """


# ---- routing ---------------------------------------------------------------------------------


@hookspec(firstresult=True)
async def select_account(flow: Flow, candidates: Sequence[Account], app: AppView) -> Account | None:
    """Choose the account that serves ``flow``.

    :param candidates: usable accounts, minus those already tried for this flow.
    :returns: an account from ``candidates``, or ``None`` to let the next strategy decide.

    Stops at first non-None result. Strategies are asked in ``[pipeline].plugins`` order.
    Call ``flow.set_route(strategy, reason)`` when choosing (shown as ``strategy:reason`` in the
    ``x-codexlb-route`` header and the request log); on a retry the core shows its own reason
    (``fallback-after-429``, ``retry-after-401``) in place of the strategy's.

    Example::

        @hookimpl
        async def select_account(flow, candidates, app):
            pro = [a for a in candidates if a.plan_type == "pro"]
            if pro:
                flow.set_route("pro_first", "pro")
                return pro[0]
            return None

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
async def send_upstream(flow: Flow, account: Account, token: str, app: AppView) -> ProxyResponse | None:
    """Send the flow to the upstream as ``account`` and return the upstream's answer as it is.

    :param token: the account's access token for this attempt (the core fetched it; after a 401
        the core refreshes exactly this token and tries again).
    :returns: a :class:`ProxyResponse`: the status and headers as received (names in any case),
        the body as bytes when the status is not 200 (read with a bound), and a byte stream for a
        streamed answer; or ``None`` to let the next plugin send it.
    :raises codexlb.UpstreamError: the transport failed before an answer; build it with
        ``codexlb.upstream_errors`` (``unreachable``, ``upstream_timeout``, ...). A stream that
        breaks later raises ``stream_broken(...)`` from inside the stream.

    Stops at first non-None result. The core does the rest around this hook: it applies the
    ``x-codex-*`` rate-limit headers to the account, classifies a failed answer (which ones fail
    over, cool the account down, or go to the client) and reads the stream's first event.

    Example::

        @hookimpl(tryfirst=True)
        async def send_upstream(flow, account, token, app):
            if flow.request.endpoint == "codex_models":
                return ProxyResponse(200, [("content-type", "application/json")], b'{"models": []}')
            return None

    .. versionadded:: 0.1
    """


@hookspec
async def account_failed(flow: Flow, account: Account, error: FlowError, app: AppView) -> None:
    """Observe a failed attempt (after the core applied cooldowns). Errors are logged.

    Example::

        @hookimpl
        async def account_failed(flow, account, error, app):
            log.warning("%s failed on %s: %s", flow.request.path, account.label, error.code)

    .. versionadded:: 0.1
    """


# ---- response phase --------------------------------------------------------------------------


@hookspec
def filter_response_stream(flow: Flow, app: AppView) -> StreamFilter | None:
    """Return a per-chunk filter for a streamed upstream answer (or ``None``).

    The cheap alternative to :func:`wrap_response_stream` for work done chunk by chunk: the core
    calls the filter's ``feed(chunk) -> bytes`` in its own stream loop (no generator layer, no
    task switch), right after its usage tap and before any wrapper. ``feed`` returns the bytes
    to pass on now (it may hold some back); setting the filter's ``error`` (a
    :class:`codexlb.FlowError`) ends the stream after those bytes with that error's terminal
    event; at the upstream's end ``rest()`` returns what is still held. Filters run in plugin
    order, each on what the one before passed. The core bounds the waits for upstream bytes
    itself (``STREAM_IDLE_TIMEOUT_SECONDS``).

    Example::

        @hookimpl
        def filter_response_stream(flow, app):
            return ByteCounter(flow)  # feed(chunk): count, return chunk; rest(): b""; error = None

    .. versionadded:: 0.1
    """


@hookspec
def wrap_response_stream(flow: Flow, stream: AsyncIterator[bytes],
                         app: AppView) -> AsyncIterator[bytes] | None:
    """Return a new byte stream that wraps ``stream`` (or ``None`` to leave it).

    A synchronous factory: it returns an async iterator, it does not iterate. Wrappers
    chain; the first plugin in order is the outermost (closest to the client). Raise inside
    the iterator to end the stream; the core turns that into a terminal error event.

    Example::

        @hookimpl
        def wrap_response_stream(flow, stream, app):
            async def counted():  # BYTES = StashKey[int]() at module level
                async for chunk in stream:
                    flow.stash[BYTES] = (flow.stash.get(BYTES) or 0) + len(chunk)
                    yield chunk
            return counted()

    .. versionadded:: 0.1
    """


# ---- after -----------------------------------------------------------------------------------


@hookspec
async def flow_done(flow: Flow, app: AppView) -> None:
    """Observe a finished flow (after the last byte or a disconnect), off the hot path.

    Runs in one long-lived background task that observes finished flows one after another, in
    the order they finished (not a task per flow); errors are logged under the plugin's name.
    An implementation that waits on I/O holds up the flows after it: hand such work to a task
    of its own (``app.tasks.spawn``). At shutdown every finished flow is observed before the
    plugins' ``shutdown``. A WebSocket turn calls it right after the turn ends.

    Example::

        @hookimpl
        async def flow_done(flow, app):
            took = (flow.finished_at or flow.started_at) - flow.started_at
            log.info("%s %s in %.0f ms", flow.request.path, flow.status, took * 1000)

    .. versionadded:: 0.1
    """
