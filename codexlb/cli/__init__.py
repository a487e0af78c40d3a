"""The ``codexlb`` command line. Each sub-module adds its commands with ``register(subparsers)``.

A handler is ``handler(args, settings) -> int``; settings are loaded and validated first, and a
bad value stops the program with exit status 2 and one line per problem.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from codexlb.errors import ConfigError, PluginError
from codexlb.logs import configure_logging
from codexlb.settings import load_settings

COMMAND_MODULES = ("codexlb.cli.serve", "codexlb.cli.config", "codexlb.cli.db", "codexlb.cli.accounts",
                   "codexlb.cli.jobs", "codexlb.cli.dashboard", "codexlb.cli.keys")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codexlb", description="Pool ChatGPT (Codex) accounts behind one "
                                     "OpenAI-compatible endpoint.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k, None) for k in ("host", "port")}
    try:
        settings = load_settings(**overrides) if getattr(args, "needs_settings", True) else None
    except ConfigError as exc:
        print("codexlb: invalid settings:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if settings is not None:
        configure_logging(settings)
    try:
        return int(args.func(args, settings) or 0)
    except (ConfigError, PluginError) as exc:
        print(f"codexlb: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
