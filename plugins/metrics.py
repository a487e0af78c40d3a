"""Prometheus metrics at ``GET /metrics`` (text format, through ``prometheus-client``).

Hooks: ``configure``, ``register_routes`` (the ``/metrics`` route), ``startup`` (the event-loop
lag probe), ``wrap_response_stream`` (counts a stream as active; the stream is not wrapped) and
``flow_done`` (counts the finished flow, off the hot path). Pool, token and job figures are read
from the running app when scraped, so nothing is counted twice and nothing is stored.

Access: clients on this machine (loopback, and not forwarded by a local reverse proxy for a remote
client), or any client sending ``Authorization: Bearer <METRICS_TOKEN>`` when that setting is
set. Others get 403 (401 for a wrong token). So ``/metrics`` is never open on a public bind
unless a token is configured.

Series (labels are low-cardinality: ``account`` is the account's label, or the first 8 characters
of its id when the label is an e-mail address; never an e-mail or a key):

- ``codexlb_requests_total{route,status,reason}``: finished requests by route kind (``endpoint``),
  status sent and strategy reason (``sticky:hit``, ``least_used:fallback-after-429``, ``none``).
- ``codexlb_ttfb_seconds{route}``, ``codexlb_request_duration_seconds{route}``: histograms.
- ``codexlb_upstream_errors_total{class}``: failed upstream attempts by error class;
  ``codexlb_failovers_total``: attempts on another account after a failed one.
- ``codexlb_token_refreshes_total{result}``: ``ok`` / ``failed``.
- ``codexlb_account_used_percent{account,window}`` and ``codexlb_account_reset_seconds{account,window}``
  (``window``: ``primary`` = 5 hours, ``secondary`` = weekly); ``codexlb_accounts{status}``.
- ``codexlb_active_streams``: upstream streams being relayed now.
- ``codexlb_job_runs_total{job}``, ``codexlb_job_failures_total{job}``.
- ``codexlb_event_loop_lag_seconds``: how late a timer fired, sampled every second.
- ``codexlb_key_requests_total{key}``, ``codexlb_key_tokens_total{key,kind}``: per client key, by
  the key's name (:meth:`Metrics.key_label`; ``CODEX_LB_API_KEYS`` for the static keys together);
  nothing for flows admitted without a key.
- ``process_*``: CPU, memory and file descriptors of this process.

Each worker or replica keeps its own figures: scrape every one of them (one target per process),
and sum in queries.

Settings table ``[plugins.metrics]``: none. Core settings used: ``METRICS_TOKEN``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from quart import Blueprint, Response
from quart import request as quart_request  # noqa: TID251 - a route handler has no flow to read it from

from codexlb import Flow, hookimpl
from codexlb.errors import UpstreamError
from codexlb.flow import Route, StashKey, fallback_reason
from codexlb.forwarding import from_this_machine
from codexlb.options import PluginOptions
from codexlb.types import AccountStatus

if TYPE_CHECKING:
    from codexlb.settings import Settings
    from codexlb.types import Account, AppView

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LAG_INTERVAL_SECONDS = 1.0
ERROR_CLASSES = frozenset({
    "usage_limit_reached", "usage_not_included", "rate_limited", "token_expired", "upstream_blocked",
    "model_not_supported", "account_deactivated", "upstream_timeout", "upstream_unreachable",
    "upstream_stream_error", "stream_incomplete", "sse_event_too_large", "no_token", "reauth_required",
    "token_refresh_failed", "upstream_error", "server_is_overloaded", "server_error",
})
STREAMING = StashKey[bool]()


def error_class(code: str | None, upstream_status: int | None = None) -> str:
    """A bounded label for an upstream error: a known code, else ``http_4xx``/``http_5xx``/``other``."""
    if code in ERROR_CLASSES:
        return code
    if upstream_status is not None and 400 <= upstream_status < 600:
        return f"http_{upstream_status // 100}xx"
    return "other"


def route_reason(route: Route | None) -> str:
    """``strategy:reason`` with the open-ended part of a fallback reason reduced to a class.

    The route's detail (``from=.. to=..`` names accounts) is left out.
    """
    if route is None:
        return "none"
    strategy, reason = route.strategy, route.reason
    if (after := route.fallback_after) is not None:
        reason = fallback_reason(after if after.isdigit() and len(after) == 3 else error_class(after))
    return f"{strategy[:32]}:{reason[:48]}" if reason else strategy[:32]


def _peer() -> str | None:
    client = quart_request.scope.get("client")
    return str(client[0]) if client else None


def account_label(account: Account) -> str:
    """The account's label, unless it is an e-mail address (then the start of its id)."""
    label = account.label or ""
    return account.id[:8] if not label or "@" in label else label[:64]


class PoolCollector(Collector):
    """Figures read from the running app at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        app = self.metrics.app
        if app is None:
            return
        now = time.time()
        used = GaugeMetricFamily("codexlb_account_used_percent", "Share of the usage window spent (0-100)",
                                 labels=["account", "window"])
        reset = GaugeMetricFamily("codexlb_account_reset_seconds", "Seconds until the usage window resets",
                                  labels=["account", "window"])
        statuses = dict.fromkeys((s.value for s in AccountStatus), 0)
        for account in app.pool.all():
            label = account_label(account)
            statuses[account.status.value] += 1
            for name, window in (("primary", account.primary), ("secondary", account.secondary)):
                used.add_metric([label, name], window.used_percent)
                seconds = window.seconds_to_reset(now)
                if seconds is not None:
                    reset.add_metric([label, name], seconds)
        by_status = GaugeMetricFamily("codexlb_accounts", "Pooled accounts by status", labels=["status"])
        for status, count in statuses.items():
            by_status.add_metric([status], count)
        yield from (used, reset, by_status)
        refreshes = CounterMetricFamily("codexlb_token_refreshes", "Token refreshes by result",
                                        labels=["result"])
        for result, count in app.tokens.refresh_results.items():
            refreshes.add_metric([result], count)
        yield refreshes
        runs = CounterMetricFamily("codexlb_job_runs", "Background job runs", labels=["job"])
        failures = CounterMetricFamily("codexlb_job_failures", "Background job runs that failed", labels=["job"])
        for name, job in app.jobs.jobs.items():
            runs.add_metric([name], job.status.runs)
            failures.add_metric([name], job.status.errors)
        yield from (runs, failures)


class Metrics:
    """Counts flows; serves ``/metrics`` from a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.app: AppView | None = None
        self.token = b""
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("codexlb_requests", "Finished requests", ["route", "status", "reason"],
                                registry=reg)
        self.ttfb = Histogram("codexlb_ttfb_seconds", "Time to the first byte sent to the client", ["route"],
                              buckets=LATENCY_BUCKETS, registry=reg)
        self.duration = Histogram("codexlb_request_duration_seconds", "Time to the last byte", ["route"],
                                  buckets=LATENCY_BUCKETS, registry=reg)
        self.upstream_errors = Counter("codexlb_upstream_errors", "Failed upstream attempts by class",
                                       ["class"], registry=reg)
        self.failovers = Counter("codexlb_failovers", "Attempts on another account after a failed one",
                                 registry=reg)
        self.active = Gauge("codexlb_active_streams", "Upstream streams being relayed", registry=reg)
        self.loop_lag = Gauge("codexlb_event_loop_lag_seconds", "How late a 1-second timer fired", registry=reg)
        self.key_requests = Counter("codexlb_key_requests", "Requests by client key", ["key"], registry=reg)
        self.key_tokens = Counter("codexlb_key_tokens", "Tokens by client key", ["key", "kind"], registry=reg)
        reg.register(PoolCollector(self))
        ProcessCollector(registry=reg)
        self._children: dict[tuple[str, str, Route | None], tuple[Any, Any, Any]] = {}

    # -- hooks -------------------------------------------------------------------------------

    @hookimpl
    def configure(self, config: Mapping[str, Any], settings: Settings) -> None:
        PluginOptions("metrics", config)
        disable_created_metrics()  # no ``*_created`` series: half the output, nothing lost
        self.token = settings.metrics_token.encode()

    @hookimpl
    def register_routes(self, app: AppView) -> Blueprint:
        self.app = app
        blueprint = Blueprint("metrics", __name__)
        blueprint.add_url_rule("/metrics", "metrics", self.serve, methods=["GET"])
        return blueprint

    @hookimpl
    async def startup(self, app: AppView) -> None:
        self.app = app
        app.tasks.spawn(self._probe_loop_lag(), "metrics-loop-lag")

    @hookimpl
    def wrap_response_stream(self, flow: Flow) -> None:
        flow.stash[STREAMING] = True
        self.active.inc()

    @hookimpl
    async def flow_done(self, flow: Flow) -> None:
        if flow.stash.get(STREAMING):
            self.active.dec()
        self.count(flow)

    # -- counting ------------------------------------------------------------------------------

    def count(self, flow: Flow) -> None:
        """Add one finished flow to the series."""
        route = flow.request.endpoint
        key = (route, str(flow.status or 0), flow.route)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(route, key[1], route_reason(flow.route)),
                        self.ttfb.labels(route), self.duration.labels(route))
            if len(self._children) < 10_000:
                self._children[key] = children
        requests, ttfb, duration = children
        requests.inc()
        if flow.first_byte_at is not None:
            ttfb.observe(max(0.0, flow.first_byte_at - flow.started_at))
        if flow.finished_at is not None:
            duration.observe(max(0.0, flow.finished_at - flow.started_at))
        if len(flow.attempts) > 1 or flow.error is not None:
            self._count_errors(flow)
        key_name = self.key_label(flow)
        if key_name is not None:
            self.key_requests.labels(key_name).inc()
            if flow.usage is not None:
                for kind in ("input", "cached", "output", "reasoning"):
                    self.key_tokens.labels(key_name, kind).inc(getattr(flow.usage, kind))

    def _count_errors(self, flow: Flow) -> None:
        seen = []
        for n, attempt in enumerate(flow.attempts):
            if attempt.error is None:
                continue
            seen.append(attempt.error)
            code = attempt.error.code
            self.upstream_errors.labels(error_class(code, attempt.status)).inc()
            if n + 1 < len(flow.attempts):
                self.failovers.inc()
        error = flow.error
        if isinstance(error, UpstreamError) and error not in seen:
            self.upstream_errors.labels(error_class(error.code, error.upstream_status)).inc()

    def key_label(self, flow: Flow) -> str | None:
        """The name of the client key that made the request (set by the ``api_keys`` plugin), or ``None``.

        A name, never the key itself; there are as many as keys, so the label stays bounded.
        """
        return flow.api_key_name

    # -- route and probe -------------------------------------------------------------------

    async def serve(self) -> Any:
        """``GET /metrics``: the Prometheus text format, for allowed scrapers only."""
        from codexlb.web import json_error

        scheme, _, offered = quart_request.headers.get("authorization", "").partition(" ")
        if self.token and scheme.lower() == "bearer" and offered:
            if not hmac.compare_digest(offered.strip().encode("utf-8", "surrogateescape"), self.token):
                return json_error(401, "invalid_metrics_token", "wrong metrics token (CODEX_LB_METRICS_TOKEN)",
                                  headers={"www-authenticate": 'Bearer realm="codexlb-metrics"'})
        elif not from_this_machine(_peer(), quart_request.headers):
            hint = ("send Authorization: Bearer <CODEX_LB_METRICS_TOKEN>" if self.token
                    else "scrape from this machine or set CODEX_LB_METRICS_TOKEN")
            return json_error(403, "metrics_forbidden", f"/metrics is for this machine only; {hint}",
                              kind="permission_error")
        return Response(generate_latest(self.registry), headers={"content-type": CONTENT_TYPE_LATEST})

    async def _probe_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + LAG_INTERVAL_SECONDS
            await asyncio.sleep(LAG_INTERVAL_SECONDS)
            self.loop_lag.set(max(0.0, loop.time() - expected))
