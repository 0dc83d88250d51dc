"""
List the same emulated data several ways, in one run, and print our ratio to each.

    python benchmarks/bench_listing.py [--repeats 7] [--scenario many|one|pages|all]
        [--skip naive,sdk] [--chart benchmarks/listing.png] [--base COMMIT] [--parts]

Scenarios: ``many`` (20 projects x 5,000 jobs, 20 ms a request: latency-bound),
``one`` (1 x 100,000, 5 ms: decoding-bound), ``pages`` (1 x 20,000 in pages of 10,
1 ms: 2,000 requests, the cost of a request).

The emulator runs in a child process (a real server is remote: its CPU is not the
client's). Per scenario, every repeat runs each strategy once, back to back, every
other repeat in reverse order; the figure is the median over repeats of our time
over the baseline's *in the same repeat*, printed with its spread, for wall and
CPU seconds (``_paired.py``):

* naive: one aiohttp session, one page after another, project after project,
  ``json.loads`` into dicts;
* raw: aiohttp + orjson into dicts, the first page of each project for
  ``job_count``, then every remaining page at once under the same in-flight bound
  as ours (the limit: no objects built, no checks);
* official SDK (``huaweicloudsdkief``, extra ``bench``): for many projects its
  thread-pool "async" client, one per project (the SDK binds a client to a project),
  with the same number of requests outstanding; for one project its sync client,
  page after page. It signs with AK/SK, so it gets placeholder keys and the
  emulator's token through ``add_header``. Skipped, with a note, when not installed;
* ief-jobs fast: ``iter_jobs_many`` (or ``iter_jobs`` for one project) into
  `BatchJob`s, decoded on the compiled path (the ``fast`` extra);
* ief-jobs pure: the same on the pure decoding path;
* with ``--base COMMIT``, ief-jobs base: the package as it was at *COMMIT*;
* with ``--parts``, no walk: raw's plan, each page by our transport and
  compiled decoder into `BatchJob`s (what the walk and handing records on one
  by one cost is ours / it).

Each strategy is checked to return every record exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import attrs
import orjson
from _paired import Timings, base_package, interleaved, machine, pure

import ief_jobs
from ief_jobs import BatchJob, JobStatus, JobType, decoder_name
from ief_jobs.emulator import generate_jobs
from ief_jobs.models import ListQuery

CONCURRENCY = 32
SCENARIOS = {
    "many": {"projects": 20, "jobs": 5000, "latency": 0.020, "page_size": 100},
    "one": {"projects": 1, "jobs": 100_000, "latency": 0.005, "page_size": 100},
    "pages": {"projects": 1, "jobs": 20_000, "latency": 0.001, "page_size": 10},
}

# (emulator info, page size) -> (records, requests, or -1 if a record came twice)
Strategy = Callable[[dict[str, Any], int], tuple[int, int]]


def _start_emulator(
    projects: int, jobs: int, latency: float
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    child = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        [
            sys.executable,
            "-c",
            "from ief_jobs.cli import main; main()",
            "emulator",
            "--projects",
            str(projects),
            "--jobs",
            str(jobs),
            "--latency",
            str(latency),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None  # noqa: S101 (PIPE above)
    info = json.loads(child.stdout.readline())
    return child, info


def _url(info: dict[str, Any], project_id: str) -> str:
    return f"{info['base_url']}/v2/{project_id}/productmgr/jobs"


async def naive(info: dict[str, Any], page_size: int) -> tuple[int, int]:
    headers = {"X-Auth-Token": info["token"], "Content-Type": "application/json"}
    ids: set[str] = set()
    records = requests = 0
    async with aiohttp.ClientSession(headers=headers) as session:
        for project_id in info["project_ids"]:
            offset, total = 0, None
            while total is None or offset < total:
                params = {"limit": page_size, "offset": offset}
                async with session.get(_url(info, project_id), params=params) as resp:
                    body = json.loads(await resp.read())
                requests += 1
                total = body["job_count"]
                if not body["jobs"]:
                    break
                ids.update(j["job_id"] for j in body["jobs"])
                records += len(body["jobs"])
                offset += len(body["jobs"])
    return records, requests if len(ids) == records else -1


async def raw(info: dict[str, Any], page_size: int) -> tuple[int, int]:
    headers = {"X-Auth-Token": info["token"], "Content-Type": "application/json"}
    limit = asyncio.Semaphore(CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=0)
    ids: set[str] = set()
    records = requests = 0
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def page(project_id: str, offset: int) -> dict[str, Any]:
            nonlocal requests, records
            async with limit:
                params = {"limit": page_size, "offset": offset}
                async with session.get(_url(info, project_id), params=params) as resp:
                    body: dict[str, Any] = orjson.loads(await resp.read())
            requests += 1
            records += len(body["jobs"])
            ids.update(j["job_id"] for j in body["jobs"])
            return body

        firsts = await asyncio.gather(*(page(p, 0) for p in info["project_ids"]))
        rest = [
            page(project_id, offset)
            for project_id, first in zip(info["project_ids"], firsts, strict=True)
            for offset in range(page_size, first["job_count"], page_size)
        ]
        await asyncio.gather(*rest)
    return records, requests if len(ids) == records else -1


def client(
    info: dict[str, Any],
    page_size: int,
    package: ModuleType = ief_jobs,
    **options: Any,
) -> Any:
    """*package*'s `IefClient` on the emulator of *info*, as every benchmark lists."""
    return package.IefClient(
        info["base_url"],
        auth=package.TokenAuth(info["token"]),
        concurrency=CONCURRENCY,
        page_size=page_size,
        **options,
    )


async def ours(
    info: dict[str, Any], page_size: int, package: ModuleType = ief_jobs
) -> tuple[int, int]:
    ids: set[str] = set()
    records = 0
    async with client(info, page_size, package) as ief:
        if len(info["project_ids"]) == 1:
            async for job in ief.iter_jobs(info["project_ids"][0]):
                ids.add(job.job_id)
                records += 1
        else:
            async for _, job in ief.iter_jobs_many(info["project_ids"]):
                ids.add(job.job_id)
                records += 1
        requests = ief.requests_sent
    return records, requests if len(ids) == records else -1


async def ours_without_walk(info: dict[str, Any], page_size: int) -> tuple[int, int]:
    """
    Raw's plan (the first page of each project, then every other page at once)
    with our transport and decoder into `BatchJob`s: ours but for the walk and
    handing records on one by one. Not a way to list (nothing checks that no
    job moved past a page boundary); it shows what the walk costs.
    """
    ids: set[str] = set()
    records = 0
    query = ListQuery(page_size=page_size)
    async with client(info, page_size) as ief:
        transport = ief._transport  # noqa: SLF001 (a measurement of the parts)

        async def project(project_id: str) -> None:
            fetch = transport.page_fetcher(project_id, query)

            async def page(offset: int) -> int:
                nonlocal records
                got = await fetch(offset, page_size)
                records += len(got.jobs)
                ids.update(job.job_id for job in got.jobs)
                return got.job_count

            total = await page(0)
            rest = range(page_size, total, page_size)
            await asyncio.gather(*(page(offset) for offset in rest))

        await asyncio.gather(*(project(p) for p in info["project_ids"]))
        requests = ief.requests_sent
    return records, requests if len(ids) == records else -1


def official_sdk(info: dict[str, Any], page_size: int) -> tuple[int, int]:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials  # noqa: PLC0415
    from huaweicloudsdkief.v1 import (  # noqa: PLC0415 (extra "bench")
        IefAsyncClient,
        IefClient,
        ListBatchJobRequest,
    )

    def client(cls: Any, project_id: str) -> Any:
        keys = BasicCredentials("PLACEHOLDERAK0000000", "placeholder-sk", project_id)
        builder = cls.new_builder().with_credentials(keys)
        return builder.with_endpoints([info["base_url"]]).build()

    def request(offset: int) -> Any:
        return ListBatchJobRequest(limit=page_size, offset=offset)

    ids: set[str] = set()
    records = requests = 0

    def take(response: Any) -> Any:
        nonlocal records, requests
        requests += 1
        records += len(response.jobs)
        ids.update(job.job_id for job in response.jobs)
        return response

    if len(info["project_ids"]) == 1:
        sync = client(IefClient, info["project_ids"][0])
        offset, total = 0, None
        while total is None or offset < total:
            invoker = sync.list_batch_job_invoker(request(offset))
            page = take(invoker.add_header("X-Auth-Token", info["token"]).invoke())
            total = page.job_count
            if not page.jobs:
                break
            offset += len(page.jobs)
        return records, requests if len(ids) == records else -1

    clients = {p: client(IefAsyncClient, p) for p in info["project_ids"]}

    def submit(project_id: str, offset: int) -> Any:
        invoker = clients[project_id].list_batch_job_async_invoker(request(offset))
        return invoker.add_header("X-Auth-Token", info["token"]).invoke()

    firsts = [submit(p, 0) for p in info["project_ids"]]
    totals = [take(future.result()).job_count for future in firsts]
    window: collections.deque[Any] = collections.deque()  # CONCURRENCY outstanding
    for project_id, total in zip(info["project_ids"], totals, strict=True):
        for offset in range(page_size, total, page_size):
            if len(window) == CONCURRENCY:
                take(window.popleft().result())
            window.append(submit(project_id, offset))
    while window:
        take(window.popleft().result())
    return records, requests if len(ids) == records else -1


def _sdk_installed() -> bool:
    try:
        import huaweicloudsdkief  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _sync(run: Callable[[dict[str, Any], int], Awaitable[tuple[int, int]]]) -> Strategy:
    return lambda info, page_size: asyncio.run(run(info, page_size))


STRATEGIES: dict[str, Strategy] = {
    "naive": _sync(naive),
    "raw": _sync(raw),
    "sdk": official_sdk,
    "ief-jobs": _sync(ours),
}
# ours on each decoding path, paired with raw aiohttp+orjson (the limit)
OURS = ("ief-jobs fast", "ief-jobs pure")
_BASE = "ief-jobs base"  # --base: the tree of an older commit, beside this one
_PARTS = "no walk"  # --parts: our transport and decoder on raw's plan


def _strategies(
    skip: set[str], base: ModuleType | None, *, parts: bool = False
) -> dict[str, Strategy]:
    # ours and raw always run: the ratios are theirs
    chosen = {
        s: run
        for s, run in STRATEGIES.items()
        if s not in skip or s == "raw"
        if s != "ief-jobs"
    }
    fast = STRATEGIES["ief-jobs"]
    if decoder_name() != "pure":
        chosen["ief-jobs fast"] = fast
    else:
        print("msgspec: not installed (pip install -e '.[fast]'), pure path only")
    # a listing per run, from a cold start: no run inherits another path's heap
    chosen["ief-jobs pure"] = pure(fast, cold=True)
    if base is not None:  # an older tree of ours, decoding as it did
        chosen[_BASE] = _sync(functools.partial(ours, package=base))
    if parts:
        chosen[_PARTS] = _sync(ours_without_walk)
    return chosen


def _build_records_seconds(records: int) -> float:
    """Seconds to build *records* `BatchJob`s through their own __init__, no JSON."""
    job = generate_jobs("floor", 1)[0]
    created = datetime.fromtimestamp(job["created_at"], UTC)
    values = (
        job["job_id"],
        job["job_name"],
        JobType(job["job_type"]),
        created,
        JobStatus(job["status"]),
        job["task_total_count"],
        job["task_success_count"],
        job["task_failed_count"],
        created,
        job["description"],
    )
    started = time.perf_counter()
    for _ in range(records):
        BatchJob(*values)
    return time.perf_counter() - started


@attrs.frozen
class Result:
    """One scenario's timings per strategy, and what each strategy sent."""

    scenario: str
    records: int
    timings: Timings
    requests: dict[str, int]
    floor: float  # raw's wall time plus building the records: what no client beats


def run_scenario(
    name: str,
    repeats: int,
    *,
    skip: set[str],
    base: ModuleType | None = None,
    parts: bool = False,
) -> Result:
    spec = SCENARIOS[name]
    child, info = _start_emulator(spec["projects"], spec["jobs"], spec["latency"])
    expected = spec["projects"] * spec["jobs"]
    strategies = _strategies(skip, base, parts=parts)
    requests: dict[str, int] = {}

    def check(strategy: str, results: list[tuple[int, int]]) -> None:
        [(records, sent)] = results
        if records != expected or sent < 0:
            raise SystemExit(f"{strategy}: {records} records, not {expected} once each")
        requests[strategy] = sent

    try:
        # interleaved repeats, every other round in reverse: a strategy that
        # always ran first (or right after another) would meet the same
        # moment of a noisy machine, or a warmer emulator, each time
        timings = interleaved(
            repeats,
            {
                s: functools.partial(_once, run, info, spec["page_size"])
                for s, run in strategies.items()
            },
            check=check,
        )
    finally:
        child.terminate()
        child.wait()
    build = statistics.median(_build_records_seconds(expected) for _ in range(3))
    result = Result(
        scenario=name,
        records=expected,
        timings=timings,
        requests=requests,
        floor=timings.median_wall("raw") + build,
    )
    _print(result, spec, repeats, build=build)
    return result


def _once(
    run: Strategy, info: dict[str, Any], page_size: int, _: int
) -> tuple[int, int]:
    return run(info, page_size)


def _print(result: Result, spec: dict[str, Any], repeats: int, *, build: float) -> None:
    timings = result.timings
    print(
        f"\n{result.scenario}: {spec['projects']} project(s) x {spec['jobs']:,} jobs, "
        f"page size {spec['page_size']}, {spec['latency'] * 1000:.0f} ms latency, "
        f"{CONCURRENCY} in flight; medians of {repeats} interleaved repeats"
    )
    header = ("strategy", "wall s", "cpu s", "requests", "records/s")
    print("  {:14} {:>8} {:>8} {:>9} {:>11}".format(*header))
    for strategy in timings.wall:
        seconds = timings.median_wall(strategy)
        print(
            f"  {strategy:14} {seconds:8.3f} {timings.median_cpu(strategy):8.3f} "
            f"{result.requests[strategy]:9d} {result.records / seconds:11,.0f}"
        )
    print("  paired ratios, median (lowest-highest):")
    for ours in (s for s in OURS if s in timings.wall):
        for baseline in (s for s in timings.wall if s not in OURS):
            print(f"  {ours} / {baseline}: {timings.paired(ours, baseline)}")
    if _BASE in timings.wall:  # where the older tree stood, in the same run
        print(f"  {_BASE} / raw: {timings.paired(_BASE, 'raw')}")
    if _PARTS in timings.wall:  # what the walk and one-by-one delivery cost
        print(f"  {_PARTS} / raw: {timings.paired(_PARTS, 'raw')}")
    ours = timings.median_wall(next(s for s in OURS if s in timings.wall))
    print(
        f"  physical floor: raw {timings.median_wall('raw'):.3f} s + building "
        f"{result.records:,} frozen records {build:.3f} s = {result.floor:.3f} s; "
        f"ief-jobs / floor: {ours / result.floor:.2f}x"
    )
    fewest = spec["projects"] * math.ceil(spec["jobs"] / spec["page_size"])
    print(f"  fewest requests possible: {fewest}")


def _today() -> date:
    return datetime.now(UTC).date()


_COLORS = {"ief-jobs fast": "#d62728", "ief-jobs pure": "#ff9896"}


def _chart(results: list[Result], path: str) -> None:
    """Records per second, one panel per scenario, a bar per strategy, the spread."""
    import matplotlib as mpl  # noqa: PLC0415 (extra "bench")

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, panels = plt.subplots(
        len(results), 1, figsize=(7.5, 1.3 + 1.35 * len(results)), squeeze=False
    )
    for panel, result in zip(panels[:, 0], results, strict=True):
        timings = result.timings
        names = list(timings.wall)
        rates = [result.records / timings.median_wall(name) for name in names]
        # the spread: the slowest and the fastest repeat
        low = [
            r - result.records / max(timings.wall[n])
            for r, n in zip(rates, names, strict=True)
        ]
        high = [
            result.records / min(timings.wall[n]) - r
            for r, n in zip(rates, names, strict=True)
        ]
        colors = [_COLORS.get(name, "#7f7f7f") for name in names]
        bars = panel.barh(names, rates, color=colors, xerr=[low, high], capsize=2)
        panel.bar_label(
            bars,
            labels=[f"{rate:,.0f}/s" for rate in rates],
            label_type="center",
            fontsize=8,
            color="white",
        )
        pairs = ", ".join(
            f"{ours} / raw {statistics.median(timings.ratios(ours, 'raw')):.2f}x"
            for ours in OURS
            if ours in timings.wall
        )
        panel.set_title(
            f"{result.scenario}: {result.records:,} records ({pairs})",
            fontsize=9,
            loc="left",
        )
        panel.invert_yaxis()
        panel.set_xlim(0, max(r + h for r, h in zip(rates, high, strict=True)) * 1.05)
        panel.tick_params(labelsize=8)
        panel.xaxis.set_major_formatter(
            mpl.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}")
        )
    repeats = len(next(iter(results[0].timings.wall.values())))
    figure.suptitle(
        f"Records per second from the emulator (higher is better), {_today()}\n"
        f"{machine()}; medians of {repeats} interleaved repeats, "
        "whiskers: slowest to fastest",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"\nchart: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--scenario", choices=[*SCENARIOS, "all"], action="append", default=None
    )
    parser.add_argument(
        "--skip", default="", help="strategies to leave out, e.g. naive,sdk"
    )
    parser.add_argument("--chart", help="write a PNG chart here (needs matplotlib)")
    parser.add_argument(
        "--base",
        metavar="COMMIT",
        help="also list with the package as it was at COMMIT, as 'ief-jobs base'",
    )
    parser.add_argument(
        "--parts",
        action="store_true",
        help=f"also '{_PARTS}': our transport and decoder on raw's plan",
    )
    args = parser.parse_args()
    chosen = (
        [s for s in args.scenario if s != "all"]
        if isinstance(args.scenario, list)
        else []
    )
    names = chosen or list(SCENARIOS)
    skip = {s for s in args.skip.split(",") if s}
    if not _sdk_installed():
        skip.add("sdk")
        print("official SDK: not installed (pip install -e '.[bench]'), left out")
    print(f"{_today()}, {machine()}, decoder {decoder_name()}")
    with tempfile.TemporaryDirectory() as tmp:
        base = None if args.base is None else base_package(args.base, Path(tmp))
        if args.base is not None:
            print(f"ief-jobs base: the package at {args.base}")
        results = [
            run_scenario(name, args.repeats, skip=skip, base=base, parts=args.parts)
            for name in names
        ]
    if args.chart:
        _chart(results, args.chart)


if __name__ == "__main__":
    main()
