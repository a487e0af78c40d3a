"""In-process cost of the pipeline's streamed path: CPU per request without the web server.

    .venv/bin/python -m bench.pipeline_micro [--requests 4000] [--concurrency 1 16] [--rounds 5] [--accounts 4]

The fast fake (``bench.fastfake``) runs in its own process on the other core; this process builds
the app with every default plugin and runs each request as the proxy route does after Hypercorn
and Quart: admission, the pipeline (the real upstream plugin over loopback), the streamed body
read to its end the way Quart reads it, and ``flow_done``. It prints process CPU and wall time
per request for each concurrency (median over the rounds), so two source trees can be compared
with little noise from the server: run it in each (``PYTHONPATH=DIR``), alternating. ``--bare``
runs what ``bench.bare_floor`` does per request instead (the floor). Under
``valgrind --tool=cachegrind`` the instruction counts of two runs with different ``--requests``
give instructions per request, a measure the other load on the machine does not move.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import available_plugins, cpu_split, pin, proxy_env, start_fast_fake
from codexlb.testing.fake_sse import sample_request


async def run(args: argparse.Namespace) -> None:
    from codexlb.app import create_app, lb_of, settle_heap
    from codexlb.flow import Flow, ProxyRequest
    from codexlb.settings import load_settings
    from codexlb.web.respond import to_quart

    proxy_cores, other = cpu_split()
    with tempfile.TemporaryDirectory(prefix="codexlb-micro-") as tmp:
        root = Path(tmp)
        fake, port, accounts = await start_fast_fake(root, args.accounts, other)
        pin(0, proxy_cores)
        try:
            upstream = f"http://127.0.0.1:{port}/backend-api"
            plugins = [p for p in available_plugins() if p not in args.without]
            env = proxy_env(root, 0, upstream, f"http://127.0.0.1:{port}", plugins)
            app = create_app(load_settings(root, environ=env))
            lb = lb_of(app)
            await lb.start()
            assert lb.store is not None
            for n, acct in enumerate(accounts, 1):
                row, _ = await lb.store.upsert(
                    chatgpt_account_id=acct["chatgpt_account_id"], email=acct["email"],
                    plan_type=acct["plan_type"], access_token=acct["access_token"],
                    refresh_token=acct["refresh_token"], id_token=acct["id_token"], label=f"acct{n}")
                lb.pool.put(row)
            settle_heap()
            body = json.dumps(sample_request()).encode()
            headers = {"content-type": "application/json", "accept": "text/event-stream",
                       "user-agent": "codex_cli_rs/0.50.0", "originator": "codex_cli_rs"}

            async def one(i: int) -> None:
                request = ProxyRequest("POST", "/backend-api/codex/responses", "codex_responses",
                                       {**headers, "session-id": f"s{i % 64}"})
                flow = Flow(request)
                refused = await lb.pipeline.admit(flow)
                assert refused is None, refused
                request.body = body
                result = await lb.pipeline.run(flow)
                response = to_quart(lb, flow, result)
                size = 0
                async with response.response as stream:
                    async for chunk in stream:
                        size += len(chunk)
                assert response.status_code == 200 and size > 1000, (response.status_code, size)

            session = None
            if args.bare:  # the floor: what bench.bare_floor does per request, no pipeline
                import aiohttp

                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000), auto_decompress=False,
                                                trust_env=False, timeout=aiohttp.ClientTimeout(total=None),
                                                skip_auto_headers=("User-Agent", "Accept"))
                turn = iter(range(1 << 60))

                async def one(i: int) -> None:  # noqa: F811
                    acct = accounts[next(turn) % len(accounts)]
                    out = {k: v for k, v in headers.items() if k in ("accept", "user-agent", "originator")}
                    out["authorization"] = f"Bearer {acct['access_token']}"
                    out["chatgpt-account-id"] = acct["chatgpt_account_id"]
                    answer = await session.post(upstream + "/codex/responses", headers=out, data=body)
                    size = 0
                    try:
                        async for chunk in answer.content.iter_any():
                            size += len(chunk)
                    finally:
                        answer.release()
                    assert answer.status == 200 and size > 1000

            async def block(n: int, conc: int) -> tuple[float, float]:
                queue = iter(range(n))

                async def worker() -> None:
                    for i in queue:
                        await one(i)

                cpu, wall = time.process_time(), time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(conc)))
                await asyncio.sleep(0)
                return (time.process_time() - cpu) / n * 1e3, (time.perf_counter() - wall) / n * 1e3

            await block(500, 4)  # warm up
            for conc in args.concurrency:
                cpus, walls = [], []
                for _ in range(args.rounds):
                    cpu, wall = await block(args.requests, conc)
                    cpus.append(cpu)
                    walls.append(wall)
                print(f"c={conc}: CPU {statistics.median(cpus):.4f} ms/request (min {min(cpus):.4f}), "
                      f"wall {statistics.median(walls):.4f} ms/request", flush=True)
            if session is not None:
                await session.close()
            await lb.stop()
        finally:
            fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bare", action="store_true", help="aiohttp alone, no pipeline (the floor)")
    parser.add_argument("--without", nargs="*", default=[], help="default plugins to leave out")
    parser.add_argument("--accounts", type=int, default=4, help="pooled accounts")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
