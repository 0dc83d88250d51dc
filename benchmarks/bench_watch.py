"""
What a watch's poll costs in requests: the incremental watch against a full re-list.

    python benchmarks/bench_watch.py [--projects 2] [--jobs 20000] [--polls 50]
        [--full-polls 5]

The scenario of issue 15: the emulator in running mode, each project with
``--jobs`` jobs, about 30 unfinished among the newest few hundred and 2 old
stragglers deep in the list, one new job a poll (120 an hour, polls 30 s apart
on the emulator's clock), page size 100. The watch polls ``--polls`` times after
its baseline (the baseline is one whole listing either way); the full re-list
(``reconcile_every=1``: the old watch's cost) is measured over ``--full-polls``
polls of the same world in the same run, as its cost does not depend on what
changed. Both run on a fake clock shared with the emulator, so the world moves
30 s a poll whatever the machine's speed, and the figures are counts, not times.

Prints requests per project per poll for both (lists and ShowBatchJob apart),
their ratio, and what the incremental watch's safety re-list every
``reconcile_every`` polls adds on average.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

from ief_jobs import IefClient, JobStatus, TokenAuth
from ief_jobs.emulator import Emulator, project_ids_for
from ief_jobs.watch import DEFAULT_RECONCILE_EVERY, shard_of

INTERVAL = 30.0
PAGE_SIZE = 100


class _Done(Exception):  # noqa: N818 (a signal, not an error)
    pass


class Clock:
    """Emulated seconds that move only when the watch sleeps, a poll at a time."""

    def __init__(self, polls: int) -> None:
        self.now = 1_800_000_000.0
        self.polls_left = polls + 1  # the baseline, then the polls measured
        self.after_baseline: Counter[str] | None = None
        self.stats: Counter[str] = Counter()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self.after_baseline is None:
            self.after_baseline = Counter(self.stats)
        self.polls_left -= 1
        if self.polls_left <= 0:
            raise _Done
        self.now += seconds
        await asyncio.sleep(0)


async def _run(
    args: argparse.Namespace, polls: int, reconcile_every: int
) -> tuple[Counter[str], Counter[str], int, dict[str, int]]:
    """Requests of the baseline and of the polls after it, by call; events."""
    clock = Clock(polls)
    async with Emulator(
        projects=args.projects,
        jobs=args.jobs,
        seed=args.seed,
        running=True,
        clock=clock,
        new_jobs_per_hour=3600 / INTERVAL,
    ) as emulator:
        unfinished = [
            sum(not JobStatus(j["status"]).is_final for j in emulator.jobs(pid))
            for pid in emulator.project_ids
        ]
        clock.stats = emulator.stats.requests_by_call
        kinds: Counter[str] = Counter()
        async with IefClient(
            emulator.base_url, auth=TokenAuth(emulator.token), page_size=PAGE_SIZE
        ) as ief:
            events = ief.watch_jobs(
                emulator.project_ids,
                interval=INTERVAL,
                reconcile_every=reconcile_every,
                clock=clock,
                sleep=clock.sleep,
            )
            try:
                async for event in events:
                    kinds[event.kind.value] += 1
            except _Done:
                pass
        baseline = clock.after_baseline or Counter()
        after = Counter(emulator.stats.requests_by_call) - baseline
        return baseline, after, sum(unfinished), dict(kinds)


def _per_poll(requests: Counter[str], projects: int, polls: int) -> float:
    return sum(requests.values()) / projects / polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--polls", type=int, default=50)
    parser.add_argument("--full-polls", type=int, default=5)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    base, inc, unfinished, kinds = asyncio.run(
        _run(args, args.polls, DEFAULT_RECONCILE_EVERY)
    )
    _, full, _, _ = asyncio.run(_run(args, args.full_polls, 1))
    n = args.projects
    inc_poll = _per_poll(inc, n, args.polls)
    full_poll = _per_poll(full, n, args.full_polls)
    print(
        f"{n} projects x {args.jobs:,} jobs, {unfinished} unfinished at the start "
        f"(stragglers included), one new job a poll, page size {PAGE_SIZE}"
    )
    print(
        f"baseline (one whole listing, either way): {sum(base.values()) / n:,.0f} "
        "requests per project"
    )
    print(
        f"incremental watch, {args.polls} polls: {inc_poll:.2f} requests per project "
        f"per poll ({inc['list']} list, {inc['show']} show in all)"
    )
    print(
        f"full re-list,      {args.full_polls} polls: {full_poll:.2f} requests per "
        f"project per poll ({full['list']} list in all)"
    )
    print(
        f"ratio: a full re-list poll costs {full_poll / inc_poll:.0f}x an "
        "incremental one"
    )
    # each project re-lists whole once every reconcile_every polls, staggered by
    # its id's hash; the baseline is the watch's poll 1
    r = DEFAULT_RECONCILE_EVERY
    relists = sum(
        (poll + shard_of(pid, r)) % r == 0
        for pid in project_ids_for(n, seed=args.seed)
        for poll in range(2, args.polls + 2)
    )
    whole = sum(base.values()) / n
    steady = (sum(inc.values()) - relists * whole) / n / args.polls
    print(
        f"of those polls, {relists} were safety re-lists (one every {r} polls a "
        f"project); in the long run: {steady:.2f} + {whole:,.0f}/{r} = "
        f"{steady + whole / r:.2f} requests per project per poll"
    )
    print("events:", ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())))
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
