"""codexlb: pool ChatGPT (Codex) subscription accounts behind one OpenAI-compatible endpoint.

Plugin authors import everything they need from here.
"""

from codexlb.errors import (
    BadRequest,
    CodexLBError,
    ConfigError,
    FlowError,
    NoAccountAvailable,
    PayloadTooLarge,
    PluginError,
    PoolExhausted,
    UnsupportedEncoding,
    UpstreamError,
)
from codexlb.flow import Attempt, Flow, ProxyRequest, ProxyResponse, Route, Stash, StashKey
from codexlb.hookspecs import hookimpl
from codexlb.options import PluginOptions
from codexlb.types import Account, AccountStatus, AppView, TokenUsage, UsageWindow

__version__ = "0.1.0"
__all__ = [
    "Account", "AccountStatus", "AppView", "Attempt", "BadRequest", "CodexLBError", "ConfigError", "Flow",
    "FlowError", "NoAccountAvailable", "PayloadTooLarge", "PluginError", "PluginOptions", "PoolExhausted",
    "ProxyRequest", "ProxyResponse", "Route", "Stash", "StashKey", "TokenUsage", "UnsupportedEncoding",
    "UpstreamError", "UsageWindow", "hookimpl", "create_app", "load_settings",
]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from codexlb.app import create_app

        return create_app
    if name == "load_settings":
        from codexlb.settings import load_settings

        return load_settings
    raise AttributeError(name)
