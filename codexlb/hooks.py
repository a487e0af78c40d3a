"""Dispatch of every hook: the async caller and the typed :class:`Hooks` facade.

This is the only module that touches ``pm.hook``. pluggy registers, validates and orders
implementations; its own call loop is synchronous, so async hooks are walked here in pluggy's
order (LIFO registration, tryfirst/trylast applied), each implementation receiving only the
arguments it asked for. Implementation lists are frozen when :class:`Hooks` is built, together
with whether each one is a coroutine function, so a call costs one positional call per
implementation (and an ``await`` only for the async ones). A request hook no plugin implements
costs one empty coroutine. With ``trace_hooks`` every implementation of an async hook is
wrapped once, at build time, in a timer that logs its duration.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from quart import Blueprint

    from codexlb.answer_stream import StreamFilter
    from codexlb.errors import FlowError
    from codexlb.flow import Flow, ProxyResponse
    from codexlb.settings import Settings
    from codexlb.types import Account, AppView

log = logging.getLogger("codexlb.hooks")
Impl = tuple[str, Callable[..., Any], tuple[str, ...], bool]
"""``(plugin name, function, argument names, is a coroutine function)``."""


def _timed(plugin: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as a coroutine function that logs how long each call took (``trace_hooks``)."""

    @functools.wraps(function)
    async def timed(*args: Any) -> Any:
        started = time.perf_counter()
        result = function(*args)
        if inspect.isawaitable(result):
            result = await result
        log.info("hook %s.%s took %.3f ms", plugin, function.__name__, (time.perf_counter() - started) * 1000)
        return result

    return timed


def _impls(pm: pluggy.PluginManager, name: str, trace: bool) -> list[Impl]:
    """The implementations in call order; with ``trace``, those of async hooks timed."""
    caller = getattr(pm.hook, name)
    timed = trace and caller.spec is not None and inspect.iscoroutinefunction(caller.spec.function)
    out: list[Impl] = []
    for impl in reversed(caller.get_hookimpls()):
        function = _timed(impl.plugin_name, impl.function) if timed else impl.function
        out.append((impl.plugin_name, function, tuple(impl.argnames), inspect.iscoroutinefunction(function)))
    return out


def _pending(result: Any, is_async: bool) -> bool:
    """Whether an implementation's return value must be awaited (a plain function may return an awaitable)."""
    return is_async or (result is not None and inspect.isawaitable(result))


async def _nothing() -> None:
    """A request hook nobody implements: a coroutine that is done at once (no arguments gathered)."""


class Hooks:
    """One typed method per hook; call sites never see pluggy."""

    def __init__(self, pm: pluggy.PluginManager, app: AppView | None = None) -> None:
        self.pm, self.app = pm, app
        self.trace = bool(app is not None and app.settings.trace_hooks)
        names = [n for n in dir(pm.hook) if not n.startswith("_")]
        self._impls: dict[str, list[Impl]] = {n: _impls(pm, n, self.trace) for n in names}

    def implementers(self, name: str) -> list[str]:
        """Plugin names implementing hook ``name``, in call order."""
        return [impl[0] for impl in self._impls.get(name, [])]

    def implemented(self, name: str) -> bool:
        """Whether any plugin implements hook ``name``."""
        return bool(self._impls.get(name))

    # -- callers -------------------------------------------------------------------------

    async def _first_of(self, impls: list[Impl], kwargs: Mapping[str, Any]) -> Any:
        for _, function, argnames, is_async in impls:
            result = function(*[kwargs[a] for a in argnames])
            if _pending(result, is_async):
                result = await result
            if result is not None:
                return result
        return None

    def _first(self, name: str, **kwargs: Any) -> Awaitable[Any]:
        impls = self._impls[name]
        return self._first_of(impls, kwargs) if impls else _nothing()

    async def _until_response_of(self, impls: list[Impl], flow: Flow) -> None:
        kwargs = {"flow": flow, "app": self.app}
        for _, function, argnames, is_async in impls:
            result = function(*[kwargs[a] for a in argnames])
            if _pending(result, is_async):
                await result
            if flow.response is not None:
                return

    def _until_response(self, name: str, flow: Flow) -> Awaitable[None]:
        impls = self._impls[name]
        return self._until_response_of(impls, flow) if impls else _nothing()

    async def _observe(self, name: str, reverse: bool = False, **kwargs: Any) -> None:
        impls = self._impls[name]
        for plugin, function, argnames, is_async in reversed(impls) if reverse else impls:
            try:
                result = function(*[kwargs[a] for a in argnames])
                if _pending(result, is_async):
                    await result
            except Exception:
                log.exception("plugin %s failed in %s", plugin, name)

    # -- load ----------------------------------------------------------------------------

    def configure(self, settings: Settings) -> None:
        for plugin, function, argnames, _ in self._impls["configure"]:
            kwargs = {"config": settings.options_for(plugin), "settings": settings}
            function(*[kwargs[a] for a in argnames])

    def register_routes(self) -> list[Blueprint]:
        blueprints: list[Blueprint] = []
        for _, function, argnames, _ in self._impls["register_routes"]:
            result = function(*[{"app": self.app}[a] for a in argnames])
            if result is not None:
                blueprints.extend(result if isinstance(result, list) else [result])
        return blueprints

    # -- lifespan ------------------------------------------------------------------------

    async def startup(self) -> None:
        for _, function, argnames, is_async in self._impls["startup"]:
            result = function(*[{"app": self.app}[a] for a in argnames])
            if _pending(result, is_async):
                await result

    async def shutdown(self) -> None:
        await self._observe("shutdown", reverse=True, app=self.app)

    # -- request -------------------------------------------------------------------------
    # Plain methods returning the awaitable: one coroutine per hook call, not two.

    def admit_request(self, flow: Flow) -> Awaitable[None]:
        return self._until_response("admit_request", flow)

    def decode_request(self, flow: Flow) -> Awaitable[None]:
        return self._until_response("decode_request", flow)

    def transform_request(self, flow: Flow) -> Awaitable[None]:
        return self._until_response("transform_request", flow)

    # -- routing -------------------------------------------------------------------------

    def select_account(self, flow: Flow, candidates: Sequence[Account]) -> Awaitable[Account | None]:
        return self._first("select_account", flow=flow, candidates=candidates, app=self.app)

    def send_upstream(self, flow: Flow, account: Account, token: str) -> Awaitable[ProxyResponse | None]:
        return self._first("send_upstream", flow=flow, account=account, token=token, app=self.app)

    async def account_failed(self, flow: Flow, account: Account, error: FlowError) -> None:
        await self._observe("account_failed", flow=flow, account=account, error=error, app=self.app)

    # -- response ------------------------------------------------------------------------

    def filter_response_stream(self, flow: Flow) -> list[StreamFilter]:
        """The filters of a streamed answer, in plugin order."""
        filters = []
        kwargs = {"flow": flow, "app": self.app}
        for _, function, argnames, _ in self._impls["filter_response_stream"]:
            made = function(*[kwargs[a] for a in argnames])
            if made is not None:
                filters.append(made)
        return filters

    def wrap_response_stream(self, flow: Flow, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Chain the wrappers so that the first plugin in order ends up outermost."""
        for _, function, argnames, _ in reversed(self._impls["wrap_response_stream"]):
            kwargs = {"flow": flow, "stream": stream, "app": self.app}
            wrapped = function(*[kwargs[a] for a in argnames])
            if wrapped is not None:
                stream = wrapped
        return stream

    async def flow_done(self, flow: Flow) -> None:
        await self._observe("flow_done", flow=flow, app=self.app)
