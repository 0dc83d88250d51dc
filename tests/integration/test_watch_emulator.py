"""watch_jobs against the emulator's running jobs, on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from ief_jobs import (
    IefClient,
    JobEvent,
    JobEventKind,
    JobStatus,
    SqliteCheckpoint,
    TokenAuth,
)
from ief_jobs.emulator import Emulator


class Clock:
    """Unix seconds that move only when the watch sleeps; the emulator and the
    watch share it."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.sleeps = 0
        self._waiters: list[tuple[int, asyncio.Event]] = []

    async def reached(self, sleeps: int) -> None:
        """Wait until the watch has slept *sleeps* times in all."""
        event = asyncio.Event()
        self._waiters.append((sleeps, event))
        await event.wait()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        for target, event in self._waiters:
            if self.sleeps >= target:
                event.set()
        await asyncio.sleep(0)


async def test_every_transition_once_in_order_and_finished_jobs_cost_nothing() -> None:
    clock = Clock()
    async with Emulator(
        projects=3, jobs=60, running=True, clock=clock, seed=4
    ) as emulator:
        before = {
            pid: {j["job_id"]: j["status"] for j in emulator.jobs(pid)}
            for pid in emulator.project_ids
        }
        unfinished = {
            (pid, job_id)
            for pid, jobs in before.items()
            for job_id, status in jobs.items()
            if not JobStatus(status).is_final
        }
        assert unfinished  # the seed gives jobs that will run
        events: list[JobEvent] = []
        async with IefClient(emulator.base_url, auth=TokenAuth(emulator.token)) as ief:
            stream = ief.watch_jobs(
                emulator.project_ids, interval=10, clock=clock, sleep=clock.sleep
            )
            async with contextlib.aclosing(stream):
                async for event in stream:
                    events.append(event)
                    finished = {
                        (e.project_id, e.job.job_id)
                        for e in events
                        if e.kind == JobEventKind.FINISHED and e.job
                    }
                    if finished >= unfinished:
                        break
            # everything final now: a poll costs one count request per project
            sent, slept = emulator.stats.requests, clock.sleeps
            idle = ief.watch_jobs(
                emulator.project_ids, interval=10, clock=clock, sleep=clock.sleep
            )
            task = asyncio.ensure_future(anext(idle))
            await clock.reached(slept + 12)  # the baseline poll, then eleven idle
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await idle.aclose()  # type: ignore[attr-defined]
            idle_requests = emulator.stats.requests - sent

        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    for pid, job_id in unfinished:
        mine = [
            e for e in events if e.job and (e.project_id, e.job.job_id) == (pid, job_id)
        ]
        changes = [
            (e.old_status, e.new_status)
            for e in mine
            if e.kind == JobEventKind.STATUS_CHANGED
        ]
        statuses = [before[pid][job_id], *(new for _, new in changes)]
        # each transition once: every change starts where the last one ended
        assert [old for old, _ in changes] == statuses[:-1]
        assert len(set(statuses)) == len(statuses)
        assert JobStatus(statuses[-1]).is_final
        assert [JobEventKind.FINISHED] == [
            e.kind for e in mine if e.kind == JobEventKind.FINISHED
        ]
        assert mine[-1].kind == JobEventKind.FINISHED
    assert 3 + 11 * 3 == idle_requests  # each project listed once, then counted
    assert [] == [t for t in others if not t.done()]


async def test_a_failing_project_is_reported_and_the_others_go_on() -> None:
    """A project IEF does not know (404) is a project_failed event on its first
    poll, then every third; the running project's events keep coming."""
    clock = Clock()
    async with Emulator(projects=1, jobs=40, running=True, clock=clock, seed=4) as emu:
        gone = "ffffffffffffffffffffffffffffffff"
        async with IefClient(emu.base_url, auth=TokenAuth(emu.token)) as ief:
            stream = ief.watch_jobs(
                [gone, *emu.project_ids], interval=10, clock=clock, sleep=clock.sleep
            )
            async with contextlib.aclosing(stream):
                events = []
                async for event in stream:
                    events.append(event)
                    if len(events) == 30:
                        break

    failed = [e for e in events if e.kind == JobEventKind.PROJECT_FAILED]
    assert failed
    assert {gone} == {e.project_id for e in failed}
    assert [1, 3, 6][: len(failed)] == [e.failures for e in failed][:3]
    assert all(e.error is not None and e.error.project_id == gone for e in failed)
    assert {emu.project_ids[0]} == {e.project_id for e in events if e not in failed}


async def test_old_stragglers_are_shown_and_a_deleted_one_is_told() -> None:
    """Two unfinished jobs deep in a 3,000-job project cost a ShowBatchJob each
    a poll, not thirty pages; a straggler deleted answers 404: deleted."""
    clock = Clock()
    async with Emulator(
        projects=1, jobs=3000, running=True, clock=clock, seed=4, stragglers=2
    ) as emulator:
        pid = emulator.project_ids[0]
        jobs = emulator.jobs(pid)
        stragglers = [
            j["job_id"] for j in jobs[:-300] if not JobStatus(j["status"]).is_final
        ]
        assert 2 == len(stragglers)
        async with IefClient(emulator.base_url, auth=TokenAuth(emulator.token)) as ief:
            stream = ief.watch_jobs([pid], interval=1, clock=clock, sleep=clock.sleep)
            async with contextlib.aclosing(stream):
                task = asyncio.ensure_future(anext(stream))
                await clock.reached(1)  # the baseline: one whole listing
                lists, shows = (
                    emulator.stats.requests_by_call[c] for c in ("list", "show")
                )
                await clock.reached(4)
                polls_lists = emulator.stats.requests_by_call["list"] - lists
                polls_shows = emulator.stats.requests_by_call["show"] - shows
                emulator.delete_job(pid, stragglers[0])
                while True:
                    event = await task
                    if event.kind == JobEventKind.DELETED:
                        break
                    task = asyncio.ensure_future(anext(stream))

    assert stragglers[0] == (event.job and event.job.job_id)
    assert 2 * 3 == polls_shows  # three polls, two stragglers
    assert polls_lists <= 3 * 3  # the head: a page or three a poll, never thirty


async def test_leaving_async_with_is_a_clean_stop(tmp_path: Path) -> None:
    """watch_jobs is a Stream: leaving its block counts the event in hand as
    taken, so the next run on the same checkpoint goes on after it."""
    async with (
        Emulator(projects=1, jobs=20, seed=4) as emulator,
        IefClient(emulator.base_url, auth=TokenAuth(emulator.token)) as ief,
    ):
        pid = emulator.project_ids[0]
        got = []
        for _ in range(2):
            async with (
                SqliteCheckpoint(tmp_path / "watch.db") as state,
                ief.watch_jobs([pid], emit_existing=True, checkpoint=state) as events,
            ):
                got.append(await anext(events))

    oldest = [job["job_id"] for job in emulator.jobs(pid)[:2]]
    assert oldest == [e.job and e.job.job_id for e in got]
