"""Built-in plugins, one module each, loadable exactly like third-party ones."""

BUILTIN: dict[str, str] = {
    "firewall": "plugins.firewall:Firewall",
    "api_keys": "plugins.api_keys:ApiKeys",
    "decompress": "plugins.decompress:Decompress",
    "image_inline": "plugins.image_inline:ImageInline",
    "select_sticky": "plugins.select_sticky:SelectSticky",
    "select_least_used": "plugins.select_least_used:SelectLeastUsed",
    "select_round_robin": "plugins.select_round_robin:SelectRoundRobin",
    "upstream": "plugins.upstream:Upstream",
    "sse_limit": "plugins.sse_limit:SSELimit",
    "log_db": "plugins.log_db:LogDB",
    "log_stdout": "plugins.log_stdout:LogStdout",
    "metrics": "plugins.metrics:Metrics",
}

DEFAULT_PLUGINS: tuple[str, ...] = tuple(BUILTIN)
"""The pipeline when ``[pipeline] plugins`` is not set: every built-in, in the order above.

This is the one copy of the default list; README's table and ``settings.toml`` refer to it and
``tests/test_docs.py`` checks that they do.
"""
