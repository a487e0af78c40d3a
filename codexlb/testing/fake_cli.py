"""Command line of the fake upstream (``codexlb fake-upstream`` and ``python -m codexlb.testing.fake_upstream``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

FAULT_HELP = ("queue a fault at start: KIND[,name=value...] or a JSON object, e.g. "
              "usage_limit,resets_in_seconds=600,account=1,times=-1 or drop_mid_stream,after_events=4 "
              "(repeatable; account is an id, email or 1-based position; times -1 = forever); "
              "while running: POST /_fake/faults")


def add_arguments(parser: argparse.ArgumentParser, *, port: int) -> None:
    """The fake's options."""
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"listen port; 0 picks a free one (default {port})")
    parser.add_argument("--accounts", type=int, default=3, help="accounts created at start")
    parser.add_argument("--auth-dir", help="write one auth.json per account into this folder")
    parser.add_argument("--info", help="write the URLs and accounts (with their auth.json) to this JSON file")
    parser.add_argument("--events", type=int, default=20, help="text deltas per answer")
    parser.add_argument("--event-delay", type=float, default=0.0, help="seconds between SSE frames")
    parser.add_argument("--fault", action="append", default=[], metavar="SPEC", help=FAULT_HELP)


def run(args: argparse.Namespace) -> int:
    """Check the options and faults, then run until Ctrl-C or SIGTERM; 2 on a bad option."""
    from codexlb.testing.fake_faults import parse_fault_arg, split_spec

    problems = []
    if args.accounts < 0:
        problems.append(f"--accounts: {args.accounts} is negative")
    if args.events < 1:
        problems.append(f"--events: {args.events} must be at least 1")
    if args.event_delay < 0:
        problems.append(f"--event-delay: {args.event_delay} is negative")
    specs: list[dict[str, Any]] = []
    for text in args.fault:
        try:
            spec = parse_fault_arg(text)
            split_spec({k: v for k, v in spec.items() if k != "account"})
            specs.append(spec)
        except ValueError as exc:
            problems.append(f"--fault {text!r}: {exc}")
    if problems:
        for line in problems:
            print(f"codexlb fake-upstream: {line}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, specs))
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        print(f"codexlb fake-upstream: {exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(args: argparse.Namespace, specs: list[dict[str, Any]]) -> None:
    import signal

    from codexlb.testing.fake_upstream import FakeUpstream, write_auth_files

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before anything is printed: a signal after the first line stops it
        loop.add_signal_handler(sig, stop.set)
    async with FakeUpstream(host=args.host, port=args.port, events=args.events,
                            event_delay=args.event_delay) as fake:
        for _ in range(args.accounts):
            fake.add_account()
        fake.inject_specs([fake.control.resolve(spec) for spec in specs])
        print(f"UPSTREAM_BASE_URL={fake.base_url}", flush=True)
        print(f"AUTH_BASE_URL={fake.auth_base_url}", flush=True)
        files = write_auth_files(fake, args.auth_dir) if args.auth_dir else []
        paths = dict(zip(fake.accounts, files, strict=True)) if files else {}
        for account in fake.accounts.values():
            where = paths.get(account.chatgpt_account_id) or "(--auth-dir or --info to write it)"
            print(f"account {account.chatgpt_account_id} {account.email} plan={account.plan_type} "
                  f"auth.json: {where}", flush=True)
        print(f"CONTROL_URL={fake.auth_base_url}/_fake/", flush=True)
        for pending in fake.pending_faults():
            print(f"fault {json.dumps(pending)}", flush=True)
        if args.info:
            info = {"upstream_base_url": fake.base_url, "auth_base_url": fake.auth_base_url,
                    "control_url": f"{fake.auth_base_url}/_fake/",
                    "accounts": [{"chatgpt_account_id": a.chatgpt_account_id, "email": a.email,
                                  "plan_type": a.plan_type, "auth_json": a.auth_json()}
                                 for a in fake.accounts.values()]}
            path = Path(args.info)
            path.write_text(json.dumps(info, indent=2) + "\n")
            path.chmod(0o600)
        print("READY", flush=True)
        await stop.wait()
