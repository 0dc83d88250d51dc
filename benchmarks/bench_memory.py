"""
Memory and fan-out cost, each case in a fresh process.

    python benchmarks/bench_memory.py [--projects 10] [--jobs 100000]
        [--fanout 2000,10000]

1. Stream a million records through ``iter_jobs_many`` without keeping them, and
   print how much the client's peak memory grew. The emulator runs in a child
   process; the figure is this process's peak RSS (``ru_maxrss``) after the
   listing minus before it, with the client warmed up on a small listing first
   so imports and the session are not counted.
2. A fan-out costs what is in flight, not what is listed: ``iter_jobs_many`` over
   2,000 and 10,000 projects of 3,300 jobs each, 50 ms an answer, stopped after
   20,000 records. Prints the time to the first record, the most asyncio tasks
   alive at once and the peak RSS growth. The server is a synthetic one (any
   project has 3,300 jobs, made up per page), as the emulator would hold 33
   million records in memory.
3. A stalled consumer stalls the fetching: ``iter_jobs_many`` over 40 projects of
   3,000 jobs (the emulator in a child process), the consumer stuck on its first
   record for 3 s. Prints the requests sent meanwhile against the bound
   (2 x concurrency + projects; one window per walk made it 512) and the peak
   RSS growth, in a fresh process; then checks the listing completes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import subprocess
import sys
import time
from typing import Any

import orjson
from aiohttp import web
from bench_listing import _start_emulator

from ief_jobs import IefClient, TokenAuth


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _stream(info: dict[str, object], *, max_items: int | None) -> int:
    count = 0
    async with IefClient(info["base_url"], auth=TokenAuth(info["token"])) as ief:  # type: ignore[arg-type]
        async for _ in ief.iter_jobs_many(info["project_ids"], max_items=max_items):  # type: ignore[arg-type]
            count += 1
    return count


FANOUT_JOBS = 3300
FANOUT_LATENCY = 0.05
FANOUT_STOP = 20_000


def _synthetic_job(index: int) -> dict[str, Any]:
    return {
        "job_id": f"job-{index:08d}",
        "job_name": f"upgrade-{index}",
        "job_type": "node_upgrade",
        "created_at": 1_700_000_000 - index,
        "status": "Successful",
        "task_total_count": 1,
        "task_success_count": 1,
        "task_failed_count": 0,
        "status_last_updated_at": 1_700_000_000 - index,
        "description": "",
    }


async def _serve_synthetic() -> None:
    """Answer any project: FANOUT_JOBS jobs, FANOUT_LATENCY per answer."""
    pages: dict[tuple[int, int], bytes] = {}

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(FANOUT_LATENCY)
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "10"))
        body = pages.get((offset, limit))
        if body is None:
            end = min(offset + limit, FANOUT_JOBS)
            jobs = [_synthetic_job(i) for i in range(offset, end)]
            body = pages[offset, limit] = orjson.dumps(
                {"job_count": FANOUT_JOBS, "jobs": jobs}
            )
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v2/{project_id}/productmgr/jobs", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    print(port, flush=True)
    await asyncio.Event().wait()


async def _fan_out(base_url: str, projects: int) -> tuple[float, int, int]:
    """(seconds to the first record, most tasks alive, records) for one fan-out."""
    ids = [f"p{index:05d}" for index in range(projects)]
    started = time.perf_counter()
    first = 0.0
    most_tasks = records = 0
    async with IefClient(base_url, auth=TokenAuth("synthetic")) as ief:
        jobs = ief.iter_jobs_many(ids)
        async for _ in jobs:
            records += 1
            if records == 1:
                first = time.perf_counter() - started
            if records % 100 == 1:
                most_tasks = max(most_tasks, len(asyncio.all_tasks()))
            if records >= FANOUT_STOP:
                break
        await jobs.aclose()
    return first, most_tasks, records


def _fanout_child(port: int, projects: int) -> None:
    before = _peak_mb()
    first, tasks, records = asyncio.run(_fan_out(f"http://127.0.0.1:{port}", projects))
    grown = _peak_mb() - before
    print(orjson.dumps([projects, first, tasks, records, grown]).decode())


def _fanout(counts: list[int]) -> None:
    server = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
        [sys.executable, __file__, "--serve-synthetic"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None  # noqa: S101 (PIPE above)
    port = int(server.stdout.readline())
    print(
        f"\nfan-out: {FANOUT_JOBS:,} jobs a project, {FANOUT_LATENCY * 1000:.0f} ms "
        f"an answer, stopped after {FANOUT_STOP:,} records, each in a fresh process"
    )
    print(
        f"  {'projects':>8} {'first record':>13} {'tasks alive':>12} {'RSS growth':>11}"
    )
    try:
        for count in counts:
            out = subprocess.run(  # noqa: S603 (our own interpreter and script)
                [sys.executable, __file__, "--fanout-child", str(port), str(count)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            projects, first, tasks, records, grown = orjson.loads(out.splitlines()[-1])
            if records != FANOUT_STOP:
                raise SystemExit(f"{projects} projects: {records} records")
            print(f"  {projects:8,} {first:11.2f} s {tasks:12,} {grown:8.1f} MB")
    finally:
        server.terminate()
        server.wait()


STALL_PROJECTS = 40
STALL_JOBS = 3000
STALL_SECONDS = 3.0


async def _stalled(info: dict[str, Any]) -> tuple[int, int, int]:
    """(requests sent while stuck, concurrency, records) for a stalled consumer."""
    async with IefClient(info["base_url"], auth=TokenAuth(info["token"])) as ief:
        jobs = ief.iter_jobs_many(info["project_ids"])
        async with contextlib.aclosing(jobs):
            await anext(jobs)
            await asyncio.sleep(STALL_SECONDS)  # the consumer is stuck
            sent = ief.requests_sent
            records = 1 + sum([1 async for _ in jobs])
    return sent, ief.concurrency, records


def _stalled_child(info_json: str) -> None:
    before = _peak_mb()
    sent, concurrency, records = asyncio.run(_stalled(orjson.loads(info_json)))
    grown = _peak_mb() - before
    print(orjson.dumps([sent, concurrency, records, grown]).decode())


def _stall() -> None:
    child, info = _start_emulator(STALL_PROJECTS, STALL_JOBS, 0.0)
    try:
        out = subprocess.run(  # noqa: S603 (our own interpreter and script)
            [sys.executable, __file__, "--stalled-child", orjson.dumps(info).decode()],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        child.terminate()
        child.wait()
    sent, concurrency, records, grown = orjson.loads(out.splitlines()[-1])
    if records != STALL_PROJECTS * STALL_JOBS:
        raise SystemExit(f"stalled listing: {records} records")
    bound = 2 * concurrency + STALL_PROJECTS
    print(
        f"\nstalled consumer: {STALL_PROJECTS} projects x {STALL_JOBS:,} jobs, stuck "
        f"on its first record for {STALL_SECONDS:.0f} s: {sent} requests sent "
        f"(bound 2 x {concurrency} + {STALL_PROJECTS} = {bound}); "
        f"peak memory grew by {grown:.1f} MB"
    )


def main() -> None:
    if sys.argv[1:2] == ["--stalled-child"]:
        _stalled_child(sys.argv[2])
        return
    if sys.argv[1:2] == ["--serve-synthetic"]:
        asyncio.run(_serve_synthetic())
        return
    if sys.argv[1:2] == ["--fanout-child"]:
        _fanout_child(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--fanout", default="2000,10000")
    parser.add_argument("--skip-stall", action="store_true")
    args = parser.parse_args()
    _stream_million(args.projects, args.jobs)
    if not args.skip_stall:
        _stall()
    if args.fanout:
        _fanout([int(n) for n in args.fanout.split(",")])


def _stream_million(projects: int, jobs: int) -> None:
    child, info = _start_emulator(projects, jobs, 0.0)
    try:
        asyncio.run(_stream(info, max_items=500))  # warm up
        before = _peak_mb()
        started = time.perf_counter()
        count = asyncio.run(_stream(info, max_items=None))
        seconds = time.perf_counter() - started
        grown = _peak_mb() - before
    finally:
        child.terminate()
        child.wait()
    if count != projects * jobs:
        raise SystemExit(f"streamed {count} records, not {projects * jobs}")
    print(
        f"streamed {count:,} records from {projects} projects in {seconds:.1f} s; "
        f"peak memory grew by {grown:.1f} MB (bound: 100 MB)"
    )


if __name__ == "__main__":
    main()
