"""
``ief-jobs watch --state redis://... --sink redis-stream://...`` killed with
SIGKILL at random moments, again and again, while the emulator's world moves:
the stream then holds every transition the emulator made once, in order per
job, and nothing else (issue 20).

The emulator's clock moves with the list requests it serves (one emulated
second per four after the baseline), so the world moves only while a watcher
polls, and a job's two changes are always some polls apart. Between runs the
test waits for the killed watcher's leases to run out (``--lease-ttl``), as a
replacement started anywhere would. ``IEF_JOBS_KILLS`` sets the number of kills
(six by default; 200 for the long run).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio
import test_watch_restart

from _redis import redis_server
from ief_jobs import JobStatus
from ief_jobs.emulator import Emulator

BASE = 1_800_000_000.0
PROJECTS = 2
KILLS = int(os.environ.get("IEF_JOBS_KILLS", "6"))
STREAM = "jobs"


class ListClock(test_watch_restart.ListClock):
    """Emulated seconds: one more per four list requests after the baseline
    (the restart test's clock moves twice as fast)."""

    def __call__(self) -> float:
        if self.frozen is not None:
            return self.frozen
        return BASE + max(0, self.lists() - PROJECTS) // 4

    def lists(self) -> int:
        return 0 if self.stats is None else self.stats.requests_by_call["list"]


class Watchers:
    """Runs of the watcher, one at a time, as child processes."""

    def __init__(
        self, emulator: Emulator, redis_url: str, state: str, log: Path
    ) -> None:
        self.emulator, self.redis_url, self.log = emulator, redis_url, log
        self.state = state
        self.process: asyncio.subprocess.Process | None = None
        self.runs = 0

    async def start(self) -> None:
        sink = self.redis_url.replace("redis://", "redis-stream://")
        self.process = await test_watch_restart.spawn_watcher(
            self.emulator,
            self.log,
            ["--lease-ttl", "0.5"],
            stdout=asyncio.subprocess.DEVNULL,
            env={
                "IEF_JOBS_STATE": self.state,
                "IEF_JOBS_SINK": f"{sink}?stream={STREAM}",
            },
        )
        self.runs += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> None:
        assert self.process is not None
        if self.alive():
            self.process.kill()
        await self.process.wait()


async def _freed(raw: redis.asyncio.Redis) -> None:
    """Until no lease is held: a killed watcher's run out within their TTL."""
    for _ in range(1000):  # 10 s at most; half a second in practice
        if not await raw.keys("ief-jobs:*:owner"):
            return
        await asyncio.sleep(0.01)
    pytest.fail("a killed watcher's leases never ran out")


async def _until(condition: Any, watchers: Watchers, raw: Any, what: str) -> None:
    """Until *condition()*, restarting a watcher that stopped (a lease lost
    on a loaded machine is a stop too); bounded, so it fails, never hangs."""
    deadline = time.monotonic() + 120
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; see {watchers.log}")
        if not watchers.alive():
            await _freed(raw)
            await watchers.start()
        await asyncio.sleep(0.01)


def _expected(emulator: Emulator) -> dict[str, list[tuple[str, str | None]]]:
    """Per job, the events its transitions call for, in order."""
    want: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for t in emulator.transitions:
        new = None if t.new_status is None else str(t.new_status)
        key = f"{t.project_id}/{t.job_id}"
        if t.old_status is None:
            want[key].append(("created", new))
        elif new is None:
            want[key].append(("deleted", None))
        else:
            want[key].append(("status_changed", new))
            if JobStatus(new).is_final:
                want[key].append(("finished", new))
    return want


def _streamed(entries: list[dict[str, Any]]) -> dict[str, list[tuple[str, str | None]]]:
    got: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for entry in entries:
        if entry["kind"] == "progress":
            continue  # task counts, not a transition
        job = entry["job"]
        new = None if entry["kind"] == "deleted" else entry["new_status"]
        got[f"{job['project_id']}/{job['job_id']}"].append((entry["kind"], new))
    return got


@pytest.mark.parametrize("store", ["redis", "sqlite"])
async def test_killed_at_random_the_stream_holds_each_transition_once(
    tmp_path: Path, store: str
) -> None:
    """SIGKILL at random moments (starting, polling, between the stream
    write and the state write), restarted each time: the stream holds every
    transition once, in order per job, and nothing else. With the state in
    the same Redis a poll is one transaction; with SQLite the sink drops what
    it already holds."""
    dice = random.Random(int(os.environ.get("IEF_JOBS_KILL_SEED", "20")))
    clock = ListClock()
    with redis_server(tmp_path) as url:
        async with (
            Emulator(
                projects=PROJECTS,
                jobs=60,
                running=True,
                clock=clock,
                seed=9,
                new_jobs_per_hour=900,
            ) as emulator,
            redis.asyncio.Redis.from_url(url) as raw,
        ):
            clock.stats = emulator.stats
            state = url if store == "redis" else str(tmp_path / "watch.db")
            watchers = Watchers(emulator, url, state, tmp_path / "watch.log")

            async def baseline() -> bool:
                if store == "sqlite":  # the first poll's requests are made
                    return clock.lists() >= 2 * PROJECTS
                metas = await raw.keys("ief-jobs:*:meta")
                return len(metas) == PROJECTS

            await _until(baseline, watchers, raw, "the baseline")
            for kill in range(KILLS):
                if kill % 4:  # three kills in four while it polls, one as it starts
                    lists = clock.lists()

                    async def polling(lists: int = lists) -> bool:
                        return clock.lists() > lists

                    await _until(polling, watchers, raw, "a request")
                await asyncio.sleep(dice.uniform(0, 0.5))
                await watchers.kill()
                await _freed(raw)
                await watchers.start()

            moved = clock() - BASE  # emulated seconds the kills ran through
            end = max(BASE + 75, clock() + 20)

            async def ran_on() -> bool:
                return clock() >= end

            await _until(ran_on, watchers, raw, "the emulated end")
            clock.frozen = clock()
            settled = clock.lists() + 10 * PROJECTS

            async def caught_up() -> bool:
                return clock.lists() >= settled

            await _until(caught_up, watchers, raw, "polls after the freeze")
            await watchers.kill()
            entries = [
                orjson.loads(fields[b"event"]) for _, fields in await raw.xrange(STREAM)
            ]

    ids = Counter(entry["event_id"] for entry in entries)
    want, got = _expected(emulator), _streamed(entries)
    print(  # the figures the README quotes for the long run  # noqa: T201
        f"\n{KILLS} kills over {moved:.0f} emulated s, {watchers.runs} runs, "
        f"{len(entries)} entries, "
        f"{sum(len(v) for v in want.values())} events for "
        f"{len(emulator.transitions)} transitions"
    )
    assert [] == [event_id for event_id, n in ids.items() if n > 1]
    assert sum(len(events) for events in want.values()) > 40  # a real stream
    assert dict(want) == dict(got)
