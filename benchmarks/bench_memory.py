"""
Stream a million records through ``iter_jobs_many`` without keeping them, and
print how much the client's peak memory grew.

    python benchmarks/bench_memory.py [--projects 10] [--jobs 100000]

The emulator runs in a child process; the figure is this process's peak RSS
(``ru_maxrss``) after the listing minus before it, with the client warmed up on a
small listing first so imports and the session are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    child, info = _start_emulator(args.projects, args.jobs, 0.0)
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
    if count != args.projects * args.jobs:
        raise SystemExit(f"streamed {count} records, not {args.projects * args.jobs}")
    print(
        f"streamed {count:,} records from {args.projects} projects in {seconds:.1f} s; "
        f"peak memory grew by {grown:.1f} MB (bound: 100 MB)"
    )


if __name__ == "__main__":
    main()
