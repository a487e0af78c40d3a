"""Dispatch of every hook: the async caller and the typed :class:`Hooks` facade.

This is the only module that touches ``pm.hook``. pluggy registers, validates and orders
implementations; its own call loop is synchronous, so async hooks are walked here in pluggy's
order (LIFO registration, tryfirst/trylast applied), each implementation receiving only the
arguments it asked for. Implementation lists are frozen when :class:`Hooks` is built.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from quart import Blueprint

    from codexlb.errors import FlowError
    from codexlb.flow import Flow, ProxyResponse
    from codexlb.settings import Settings
    from codexlb.types import Account, AppView

log = logging.getLogger("codexlb.hooks")
Impl = tuple[str, Callable[..., Any], tuple[str, ...]]


def _impls(pm: pluggy.PluginManager, name: str) -> list[Impl]:
    caller = getattr(pm.hook, name)
    return [(i.plugin_name, i.function, tuple(i.argnames)) for i in reversed(caller.get_hookimpls())]


class Hooks:
    """One typed method per hook; call sites never see pluggy."""

    def __init__(self, pm: pluggy.PluginManager, app: AppView | None = None) -> None:
        self.pm, self.app = pm, app
        self.trace = bool(app is not None and app.settings.trace_hooks)
        names = [n for n in dir(pm.hook) if not n.startswith("_")]
        self._impls: dict[str, list[Impl]] = {n: _impls(pm, n) for n in names}

    def implementers(self, name: str) -> list[str]:
        """Plugin names implementing hook ``name``, in call order."""
        return [plugin for plugin, _, _ in self._impls.get(name, [])]

    # -- callers -------------------------------------------------------------------------

    async def _call(self, impl: Impl, kwargs: Mapping[str, Any]) -> Any:
        plugin, function, argnames = impl
        started = time.perf_counter() if self.trace else 0.0
        result = function(*[kwargs[a] for a in argnames])
        if inspect.isawaitable(result):
            result = await result
        if self.trace:
            log.info("hook %s.%s took %.3f ms", plugin, function.__name__,
                     (time.perf_counter() - started) * 1000)
        return result

    async def _first(self, name: str, **kwargs: Any) -> Any:
        for impl in self._impls[name]:
            if (result := await self._call(impl, kwargs)) is not None:
                return result
        return None

    async def _until_response(self, name: str, flow: Flow) -> None:
        kwargs = {"flow": flow, "app": self.app}
        for impl in self._impls[name]:
            await self._call(impl, kwargs)
            if flow.response is not None:
                return

    async def _observe(self, name: str, reverse: bool = False, **kwargs: Any) -> None:
        impls = self._impls[name]
        for impl in reversed(impls) if reverse else impls:
            try:
                await self._call(impl, kwargs)
            except Exception:
                log.exception("plugin %s failed in %s", impl[0], name)

    # -- load ----------------------------------------------------------------------------

    def configure(self, settings: Settings) -> None:
        for plugin, function, argnames in self._impls["configure"]:
            kwargs = {"config": settings.options_for(plugin), "settings": settings}
            function(*[kwargs[a] for a in argnames])

    def register_routes(self) -> list[Blueprint]:
        blueprints: list[Blueprint] = []
        for _, function, argnames in self._impls["register_routes"]:
            result = function(*[{"app": self.app}[a] for a in argnames])
            if result is not None:
                blueprints.extend(result if isinstance(result, list) else [result])
        return blueprints

    # -- lifespan ------------------------------------------------------------------------

    async def startup(self) -> None:
        for impl in self._impls["startup"]:
            await self._call(impl, {"app": self.app})

    async def shutdown(self) -> None:
        await self._observe("shutdown", reverse=True, app=self.app)

    # -- request -------------------------------------------------------------------------

    async def admit_request(self, flow: Flow) -> None:
        await self._until_response("admit_request", flow)

    async def decode_request(self, flow: Flow) -> None:
        await self._until_response("decode_request", flow)

    async def transform_request(self, flow: Flow) -> None:
        await self._until_response("transform_request", flow)

    # -- routing -------------------------------------------------------------------------

    async def select_account(self, flow: Flow, candidates: Sequence[Account]) -> Account | None:
        account: Account | None = await self._first("select_account", flow=flow, candidates=candidates,
                                                    app=self.app)
        return account

    async def send_upstream(self, flow: Flow, account: Account, token: str) -> ProxyResponse | None:
        response: ProxyResponse | None = await self._first("send_upstream", flow=flow, account=account,
                                                           token=token, app=self.app)
        return response

    async def account_failed(self, flow: Flow, account: Account, error: FlowError) -> None:
        await self._observe("account_failed", flow=flow, account=account, error=error, app=self.app)

    # -- response ------------------------------------------------------------------------

    def wrap_response_stream(self, flow: Flow, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Chain the wrappers so that the first plugin in order ends up outermost."""
        for _, function, argnames in reversed(self._impls["wrap_response_stream"]):
            kwargs = {"flow": flow, "stream": stream, "app": self.app}
            wrapped = function(*[kwargs[a] for a in argnames])
            if wrapped is not None:
                stream = wrapped
        return stream

    async def flow_done(self, flow: Flow) -> None:
        await self._observe("flow_done", flow=flow, app=self.app)
