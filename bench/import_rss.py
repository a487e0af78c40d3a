"""Resident memory of a serving proxy's imports, charged to each top-level package (first import wins).

    .venv/bin/python -m bench.import_rss          # run from an empty directory, or with CODEX_LB_DATA_DIR set

Imports what ``codexlb serve`` imports before its first request (the command line, the settings,
the app with the default plugins, the database modules, Hypercorn on uvloop), measuring
``/proc/self/statm`` around every module load. Each module's growth, less that of the modules it
loads itself, is charged to its top-level package, so the lines add up to the total; a dependency
shared by several packages is charged to itself, loaded by whichever came first.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_MB


def serve_imports() -> None:
    """What a serving process has imported before it answers (the app is built, not started)."""
    from codexlb.cli import build_parser

    build_parser()
    from codexlb.app import create_app
    from codexlb.settings import load_settings

    create_app(load_settings())
    import aiosqlite  # noqa: F401
    import hypercorn.asyncio.run  # noqa: F401
    import hypercorn.utils  # noqa: F401
    import sqlalchemy.dialects.sqlite.aiosqlite  # noqa: F401
    import uvloop  # noqa: F401

    import codexlb.db.crypto  # noqa: F401
    import codexlb.db.engine  # noqa: F401
    import codexlb.db.migrate  # noqa: F401
    import codexlb.db.store  # noqa: F401


def measure() -> tuple[float, float, dict[str, float]]:
    """RSS before and after :func:`serve_imports`, and the MB charged to each top-level package.

    Every module load is timed (``importlib._bootstrap._load_unlocked``, which ``import`` and
    ``importlib.import_module`` both go through), so a package imported lazily later is counted too.
    """
    bootstrap: Any = importlib._bootstrap
    charged: dict[str, float] = {}
    stack: list[list[float]] = []
    original = bootstrap._load_unlocked

    def counting(spec: Any) -> Any:
        stack.append([rss_mb(), 0.0])  # [RSS when this load began, MB its nested loads grew]
        try:
            return original(spec)
        finally:
            start, inner = stack.pop()
            grown = rss_mb() - start
            top = spec.name.split(".")[0]
            charged[top] = charged.get(top, 0.0) + grown - inner
            if stack:
                stack[-1][1] += grown

    before = rss_mb()
    bootstrap._load_unlocked = counting
    try:
        serve_imports()
    finally:
        bootstrap._load_unlocked = original
    return before, rss_mb(), charged


def main() -> None:
    before, after, charged = measure()
    print(f"interpreter {before:.1f} MB; after the imports {after:.1f} MB (+{after - before:.1f} MB)")
    small = [mb for mb in charged.values() if mb < 0.3]
    for package, mb in sorted(charged.items(), key=lambda item: -item[1]):
        if mb >= 0.3:
            print(f"{mb:6.1f} MB  {package}")
    print(f"{sum(small):6.1f} MB  {len(small)} packages under 0.3 MB each")
    outside = after - before - sum(charged.values())
    print(f"{outside:6.1f} MB  reading the settings, building the app (not in a module load)")


if __name__ == "__main__":
    main()
