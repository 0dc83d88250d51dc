"""watch(): events from repeated listings, driven by a fake project lister."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncGenerator, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from aioresponses import aioresponses
from hypothesis import given
from hypothesis import strategies as st

from ief_jobs import (
    BatchJob,
    IefClient,
    JobEvent,
    JobEventKind,
    JobPage,
    JobStatus,
    JobType,
    ServerError,
)
from ief_jobs.watch import shard_of, watch

_T0 = datetime(2024, 1, 1, tzinfo=UTC)
K = JobEventKind


def _job(index: int, status: JobStatus = JobStatus.RUNNING, done: int = 0) -> BatchJob:
    return BatchJob(
        job_id=f"job-{index}",
        job_name=f"name-{index}",
        job_type=JobType.NODE_UPGRADE,
        created_at=_T0 + timedelta(seconds=index),
        status=status,
        task_total_count=10,
        task_success_count=done,
        task_failed_count=0,
        status_last_updated_at=_T0,
        description="",
    )


class _Over(Exception):  # noqa: N818 (a signal, not an error)
    pass


class Project:
    """A fake project whose listing the test changes between polls: newest first,
    like IEF's, with the requests of each kind counted."""

    def __init__(self, jobs: Sequence[BatchJob] = ()) -> None:
        self.jobs = {j.job_id: j for j in jobs}
        self.reads: list[tuple[int, int]] = []
        self.lists = 0
        self.shown: list[str] = []
        self.now = 1_700_000_000.0
        self.sleeps = 0
        self.polls: int | None = None  # stop the watch after this many polls
        self._go = asyncio.Event()
        self.waiting = False  # the watch sleeps until the test lets it poll

    def listing(self) -> list[BatchJob]:
        return sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)

    async def read_page(self, project_id: str, offset: int, limit: int) -> JobPage:
        self.reads.append((offset, limit))
        jobs = self.listing()
        return JobPage(project_id, offset, len(jobs), tuple(jobs[offset:][:limit]))

    async def list_project(self, _: str) -> Sequence[BatchJob]:
        self.lists += 1
        return self.listing()

    async def show_job(self, _: str, job_id: str) -> BatchJob | None:
        self.shown.append(job_id)
        return next((j for j in self.listing() if j.job_id == job_id), None)

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.polls is not None:
            if self.sleeps >= self.polls:
                raise _Over
            await asyncio.sleep(0)
            return
        self.waiting = True
        await self._go.wait()
        self._go.clear()
        self.waiting = False

    async def polled(self, polls: int) -> None:
        """Let the watch poll until it has polled *polls* times, then hold it."""
        while self.sleeps < polls or not self.waiting:
            if self.waiting:
                self._go.set()
            await asyncio.sleep(0)

    def go(self) -> None:
        """Let the watch poll once more, and no more: a test that waits for an
        event the poll did not yield then fails instead of waiting for ever."""
        self.polls = self.sleeps + 1
        self._go.set()

    async def run(self, polls: int, **kwargs: object) -> list[JobEvent]:
        """The events of *polls* polls."""
        self.polls = polls
        events: list[JobEvent] = []
        with contextlib.suppress(_Over):
            async for event in self.watch(**kwargs):
                events.append(event)  # noqa: PERF401 (keep those before the end)
        return events

    def watch(self, **kwargs: object) -> AsyncGenerator[JobEvent, None]:
        options: dict[str, object] = {
            "read_page": self.read_page,
            "list_project": self.list_project,
            "show_job": self.show_job,
            "interval": 10,
            "page_size": 10,
            "clock": lambda: self.now,
            "sleep": self.sleep,
        }
        options.update(kwargs)
        return watch(["p1"], **options)  # type: ignore[arg-type]

    def requests(self) -> int:
        return len(self.reads) + self.lists + len(self.shown)


class Lister(Project):
    """Serves poll n the n-th scripted listing (the last one ever after), on a
    fake clock that moves only when the watch sleeps; records the requests."""

    def __init__(self, *polls: Sequence[BatchJob] | Exception) -> None:
        super().__init__()
        self.script = list(polls)
        self.done = 0  # polls finished: the watch sleeps once after each

    def listing(self) -> list[BatchJob]:
        current = self.script[min(self.done, len(self.script) - 1)]
        if isinstance(current, Exception):
            raise current
        return sorted(current, key=lambda j: j.created_at, reverse=True)

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.done += 1
        await asyncio.sleep(0)  # let the test's other tasks run

    def watch(self, **kwargs: object) -> AsyncGenerator[JobEvent, None]:
        return super().watch(**{"page_size": 100, **kwargs})


def _summary(events: list[JobEvent]) -> list[tuple[str, str | None, object, object]]:
    return [
        (e.kind.value, e.job.job_id if e.job else None, e.old_status, e.new_status)
        for e in events
    ]


class TestEvents:
    async def test_baseline_is_silent_then_every_change_is_told(self) -> None:
        a, b = _job(1), _job(2)
        lister = Lister(
            [a, b],
            [a, attrs.evolve(b, task_success_count=4), _job(3, JobStatus.WAITING)],
            [
                attrs.evolve(a, status=JobStatus.SUCCESSFUL, task_success_count=10),
                attrs.evolve(b, task_success_count=4),
                _job(3, JobStatus.WAITING),
            ],
            [_job(3, JobStatus.WAITING)],
        )
        stream = lister.watch(skip_idle=False)
        got: list[JobEvent] = []
        async with contextlib.aclosing(stream):
            async for event in stream:
                got.append(event)
                if (
                    event.kind == K.DELETED
                    and event.job
                    and event.job.job_id == "job-2"
                ):
                    break

        assert [
            ("progress", "job-2", JobStatus.RUNNING, JobStatus.RUNNING),
            ("created", "job-3", None, JobStatus.WAITING),
            ("status_changed", "job-1", JobStatus.RUNNING, JobStatus.SUCCESSFUL),
            ("finished", "job-1", JobStatus.RUNNING, JobStatus.SUCCESSFUL),
            ("deleted", "job-1", None, JobStatus.SUCCESSFUL),
            ("deleted", "job-2", None, JobStatus.RUNNING),
        ] == _summary(got)
        assert all(e.project_id == "p1" for e in got)
        assert got[0].observed_at.tzinfo is UTC

    async def test_emit_existing_tells_each_job_once_oldest_first(self) -> None:
        lister = Lister([_job(2), _job(1), _job(3, JobStatus.FAILED)])
        stream = lister.watch(emit_existing=True)
        async with contextlib.aclosing(stream):
            got = [await anext(stream) for _ in range(3)]

        assert [("created", f"job-{i}") for i in (1, 2, 3)] == [
            (e.kind.value, e.job.job_id if e.job else None) for e in got
        ]

    async def test_a_new_job_already_final_is_created_then_finished(self) -> None:
        lister = Lister([], [_job(1, JobStatus.SUCCESSFUL)])
        stream = lister.watch(skip_idle=False)
        async with contextlib.aclosing(stream):
            got = [await anext(stream) for _ in range(2)]

        assert ["created", "finished"] == [e.kind.value for e in got]


class TestCheapPolling:
    async def test_only_unfinished_drops_jobs_once_finished(self) -> None:
        done = _job(1, JobStatus.SUCCESSFUL)
        lister = Lister(
            [done, _job(2)],
            [done, _job(2, JobStatus.FAILED)],
            [_job(2, JobStatus.FAILED), _job(3)],
            [_job(3)],
        )
        stream = lister.watch(only_unfinished=True, skip_idle=False, emit_existing=True)
        async with contextlib.aclosing(stream):
            got = [await anext(stream) for _ in range(4)]

        assert [
            ("created", "job-2"),
            ("status_changed", "job-2"),
            ("finished", "job-2"),
            ("created", "job-3"),
        ] == [(e.kind.value, e.job.job_id if e.job else None) for e in got]

    async def test_an_idle_project_costs_one_count_per_poll(self) -> None:
        """All final: one record read a poll, not the listing, until it moves."""
        final = [_job(1, JobStatus.SUCCESSFUL), _job(2, JobStatus.STOPPED)]
        polls: list[Sequence[BatchJob] | Exception] = [final] * 5
        polls.append([*final, _job(3)])
        lister = Lister(*polls)
        stream = lister.watch()
        async with contextlib.aclosing(stream):
            event = await anext(stream)

        assert ("created", "job-3") == (
            event.kind.value,
            event.job and event.job.job_id,
        )
        # the baseline, four idle polls, then the new job seen and read
        assert 1 == lister.lists
        assert [(0, 1)] * 5 + [(1, 100)] == lister.reads


class TestFailures:
    async def test_a_failing_project_is_an_event_and_the_watch_goes_on(self) -> None:
        error = ServerError(status=503, project_id="p1", offset=0)
        lister = Lister(
            [_job(1)],
            error,
            error,
            error,
            error,
            error,
            error,
            [_job(1, JobStatus.SUCCESSFUL)],
        )
        stream = lister.watch(report_after=3)
        async with contextlib.aclosing(stream):
            got = [await anext(stream) for _ in range(4)]

        assert [
            ("project_failed", 3),
            ("project_failed", 6),
            ("status_changed", 0),
            ("finished", 0),
        ] == [(e.kind.value, e.failures) for e in got]
        assert got[0].error is error


class TestPacing:
    async def test_no_poll_while_the_consumer_is_away(self) -> None:
        """Polls happen only when the consumer asks: nothing piles up."""
        lister = Lister(*[[_job(1, JobStatus.RUNNING, done=i)] for i in range(10)])
        stream = lister.watch(skip_idle=False)
        async with contextlib.aclosing(stream):
            await anext(stream)
            polls = len(lister.reads)
            for _ in range(20):  # the consumer is busy elsewhere a while
                await asyncio.sleep(0)

            assert polls == len(lister.reads)
            await anext(stream)
            assert polls + 1 == len(lister.reads)

    async def test_polls_are_an_interval_apart(self) -> None:
        lister = Lister(*[[_job(1, JobStatus.RUNNING, done=i)] for i in range(10)])
        started = lister.now
        stream = lister.watch(skip_idle=False)
        async with contextlib.aclosing(stream):
            for _ in range(3):
                await anext(stream)

        assert started + 30 == lister.now

    async def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="report_after"):
            Lister([]).watch(report_after=0)


# -- polls that cost what changed ------------------------------------------------


def _many(total: int, unfinished: Iterable[int] = ()) -> list[BatchJob]:
    """*total* jobs, final but for the indexes in *unfinished* (0 is the oldest)."""
    running = set(unfinished)
    return [
        _job(i, JobStatus.RUNNING if i in running else JobStatus.SUCCESSFUL, done=0)
        for i in range(total)
    ]


class TestIncrementalPolls:
    async def test_a_poll_reads_only_down_to_the_oldest_unfinished_job(self) -> None:
        """1,000 jobs, the unfinished ones among the newest 15, one new job:
        the poll reads two pages of ten, not a hundred."""
        project = Project(_many(1000, unfinished=range(985, 1000)))
        stream = project.watch()
        async with contextlib.aclosing(stream):
            task = asyncio.ensure_future(anext(stream))
            await project.polled(1)
            before = project.requests()
            project.jobs["job-1000"] = _job(1000, JobStatus.WAITING)
            project.go()
            event = await task

        assert ("created", "job-1000") == (
            event.kind.value,
            event.job and event.job.job_id,
        )
        assert 1 == project.lists
        assert [(0, 10), (9, 10)] == project.reads
        assert 2 == project.requests() - before

    async def test_an_old_straggler_is_shown_not_read_down_to(self) -> None:
        """An unfinished job 900 records down costs one ShowBatchJob a poll."""
        project = Project(_many(1000, unfinished=[99, 995]))
        stream = project.watch()
        async with contextlib.aclosing(stream):
            task = asyncio.ensure_future(anext(stream))
            await project.polled(3)
            project.jobs["job-99"] = _job(99, JobStatus.FAILED)
            project.go()
            got = [await task, await anext(stream)]

        assert [("status_changed", "job-99"), ("finished", "job-99")] == [
            (e.kind.value, e.job and e.job.job_id) for e in got
        ]
        assert ["job-99"] * 3 == project.shown  # polls 2, 3 and 4
        assert [(0, 10)] * 3 == project.reads  # the head, down to job-995

    async def test_without_show_the_straggler_is_read_down_to(self) -> None:
        project = Project(_many(100, unfinished=[50]))
        await project.run(2, show_job=None)

        assert [(0, 10), *((9 * i, 10) for i in range(1, 6))] == project.reads

    async def test_a_deletion_the_poll_did_not_read_is_found_by_the_count(
        self,
    ) -> None:
        """A finished job deleted deep down moves job_count: the project is
        re-listed whole and the deletion told."""
        project = Project(_many(100, unfinished=[99]))
        stream = project.watch()
        async with contextlib.aclosing(stream):
            task = asyncio.ensure_future(anext(stream))
            await project.polled(2)
            del project.jobs["job-3"]
            project.go()
            event = await task

        assert ("deleted", "job-3") == (
            event.kind.value,
            event.job and event.job.job_id,
        )
        assert 2 == project.lists  # the baseline, then the reconcile

    async def test_a_deletion_balanced_by_a_creation_is_still_found(self) -> None:
        """One created (seen) and one deleted (unseen): the count is the same
        as before, but not what the poll expects."""
        project = Project(_many(100, unfinished=[99]))
        stream = project.watch()
        async with contextlib.aclosing(stream):
            task = asyncio.ensure_future(anext(stream))
            await project.polled(1)
            del project.jobs["job-3"]
            project.jobs["job-100"] = _job(100)
            project.go()
            got = [await task, await anext(stream)]

        assert [("created", "job-100"), ("deleted", "job-3")] == [
            (e.kind.value, e.job and e.job.job_id) for e in got
        ]

    async def test_every_reconcile_every_polls_a_project_is_re_listed(self) -> None:
        project = Project(_many(30, unfinished=[29]))
        await project.run(12, reconcile_every=4)

        assert 1 + 3 == project.lists  # the baseline, then one poll in four

    async def test_records_moving_between_reads_make_a_whole_re_list(self) -> None:
        """A job deleted above while the poll reads its second page shifts the
        records: the overlap shows it, and nothing is skipped."""
        project = Project(_many(40, unfinished=range(20, 40)))
        reads = project.read_page

        async def read_page(project_id: str, offset: int, limit: int) -> JobPage:
            if project.sleeps == 1 and offset > 0 and "job-39" in project.jobs:
                del project.jobs["job-39"]  # between the poll's two reads
                project.jobs["job-25"] = _job(25, JobStatus.SUCCESSFUL)
            return await reads(project_id, offset, limit)

        stream = project.watch(read_page=read_page)
        async with contextlib.aclosing(stream):
            task = asyncio.ensure_future(anext(stream))
            await project.polled(1)
            project.go()
            got = [await task]
            got += [await anext(stream) for _ in range(2)]

        assert {
            ("status_changed", "job-25"),
            ("finished", "job-25"),
            ("deleted", "job-39"),
        } == {(e.kind.value, e.job and e.job.job_id) for e in got}
        assert 2 == project.lists

    async def test_jobs_of_one_created_at_swapping_at_a_boundary_re_list(
        self,
    ) -> None:
        """Three jobs share a created_at across the boundary of the poll's two
        reads and swap places between them: the second read still holds the
        last record of the first, but a new one slipped past, and the count
        hides it (a deep job went meanwhile). The boundary check sees the
        straddling tie and the project is re-listed: nothing is missed."""
        tie = _T0 + timedelta(seconds=21)
        project = Project(
            [
                *_many(21, unfinished=[15]),
                attrs.evolve(_job(100), job_id="t-a", created_at=tie),
                attrs.evolve(_job(101), job_id="t-b", created_at=tie),
                *(_job(i, JobStatus.SUCCESSFUL) for i in range(22, 30)),
            ]
        )
        reads = project.read_page

        async def read_page(project_id: str, offset: int, limit: int) -> JobPage:
            page = await reads(project_id, offset, limit)
            if project.sleeps == 1 and offset > 0:  # the poll's second read
                listing = project.listing()
                group = [j for j in listing if j.created_at == tie]
                # the server's order of equal created_at changed: c, a, b
                swapped = [group[2], group[0], group[1]]
                at = listing.index(group[0])
                listing[at : at + 3] = swapped
                page = attrs.evolve(page, jobs=tuple(listing[offset:][:limit]))
            return page

        stream = project.watch(read_page=read_page)
        async with contextlib.aclosing(stream):
            task = asyncio.ensure_future(anext(stream))
            await project.polled(1)
            project.jobs["t-c"] = attrs.evolve(_job(102), job_id="t-c", created_at=tie)
            del project.jobs["job-0"]  # unseen: the count stays as it was
            project.go()
            got = [await task, await anext(stream)]

        assert [("created", "t-c"), ("deleted", "job-0")] == [
            (e.kind.value, e.job and e.job.job_id) for e in got
        ]
        assert [(0, 10), (9, 10)] == project.reads[:2]
        assert 2 == project.lists

    async def test_jobs_of_one_created_at_that_keep_their_places_cost_nothing(
        self,
    ) -> None:
        """Three jobs share a created_at across the boundary of the poll's two
        reads and keep their order: the poll reads two pages as ever, with no
        re-list, and tells the new one."""
        tie = _T0 + timedelta(seconds=21)
        project = Project(
            [
                *_many(21, unfinished=[15]),
                attrs.evolve(_job(100), job_id="t-a", created_at=tie),
                attrs.evolve(_job(101), job_id="t-b", created_at=tie),
                *(_job(i, JobStatus.SUCCESSFUL) for i in range(22, 30)),
            ]
        )
        stream = project.watch()
        async with contextlib.aclosing(stream):
            task = asyncio.ensure_future(anext(stream))
            await project.polled(1)
            project.jobs["t-c"] = attrs.evolve(_job(102), job_id="t-c", created_at=tie)
            project.go()
            event = await task

        assert ("created", "t-c") == (event.kind.value, event.job and event.job.job_id)
        assert [(0, 10), (9, 10)] == project.reads
        assert 1 == project.lists

    async def test_polls_in_flight_are_bounded(self) -> None:
        """A thousand projects, concurrency 4: never more than 4 polls at once."""
        in_flight, most = 0, 0
        project = Project(_many(3))

        async def read_page(project_id: str, offset: int, limit: int) -> JobPage:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0)
            in_flight -= 1
            return await project.read_page(project_id, offset, limit)

        async def list_project(project_id: str) -> Sequence[BatchJob]:
            await read_page(project_id, 0, 10)
            return project.listing()

        stream = watch(
            [f"p{i}" for i in range(1000)],
            read_page=read_page,
            list_project=list_project,
            concurrency=4,
            interval=10,
            clock=lambda: project.now,
            sleep=project.sleep,
        )
        project.polls = 2
        with contextlib.suppress(_Over):
            async for _ in stream:
                pass

        assert 4 == most
        assert 2000 == len(project.reads)


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"interval": 0}, "interval"),
            ({"interval": -1}, "interval"),
            ({"interval": float("nan")}, "interval"),
            ({"reconcile_every": 0}, "reconcile_every"),
            ({"concurrency": 0}, "concurrency"),
            ({"shard": (8, 8)}, "shard"),
            ({"shard": (-1, 8)}, "shard"),
            ({"shard": (0, 0)}, "shard"),
        ],
    )
    def test_refused_before_any_request(
        self, kwargs: dict[str, object], match: str
    ) -> None:
        project = Project(_many(3))
        with pytest.raises(ValueError, match=match):
            project.watch(**kwargs)
        assert 0 == project.requests()

    def test_no_project_is_refused(self) -> None:
        project = Project()
        with pytest.raises(ValueError, match="no project"):
            watch(
                [],
                read_page=project.read_page,
                list_project=project.list_project,
            )


class TestShards:
    @given(
        ids=st.lists(st.text("0123456789abcdef", min_size=1, max_size=32), max_size=60),
        count=st.integers(1, 12),
    )
    def test_shards_split_the_projects_with_no_overlap_and_no_gap(
        self, ids: list[str], count: int
    ) -> None:
        kept = [
            [pid for pid in dict.fromkeys(ids) if shard_of(pid, count) == index]
            for index in range(count)
        ]
        flat = [pid for shard in kept for pid in shard]
        assert sorted(flat) == sorted(dict.fromkeys(ids))
        assert len(set(flat)) == len(flat)

    def test_the_hash_is_stable_across_processes(self) -> None:
        """Not Python's salted hash: a fixed vector, and another interpreter
        with another PYTHONHASHSEED agrees."""
        code = (
            "from ief_jobs.watch import shard_of;"
            "print([shard_of(f'p{i}', 8) for i in range(20)])"
        )
        here = str([shard_of(f"p{i}", 8) for i in range(20)])
        for seed in ("1", "2"):
            out = subprocess.run(  # noqa: S603 (our own interpreter, our own code)
                [sys.executable, "-c", code],
                env={**os.environ, "PYTHONHASHSEED": seed},
                capture_output=True,
                text=True,
                check=True,
            )
            assert here == out.stdout.strip()
        assert 3 == shard_of("0123456789abcdef0123456789abcdef", 8)

    async def test_a_watch_keeps_its_shard_only(self) -> None:
        project = Project(_many(2))
        ids = [f"p{i}" for i in range(40)]
        listed: list[str] = []

        async def list_project(project_id: str) -> Sequence[BatchJob]:
            listed.append(project_id)
            return project.listing()

        stream = watch(
            ids,
            read_page=project.read_page,
            list_project=list_project,
            shard=(3, 8),
            interval=10,
            clock=lambda: project.now,
            sleep=project.sleep,
        )
        project.polls = 1
        with contextlib.suppress(_Over):
            async for _ in stream:
                pass

        assert listed == [pid for pid in ids if shard_of(pid, 8) == 3]
        assert listed


# -- the same events, however a poll reads -----------------------------------------

_STATUSES = list(JobStatus)


def _history(
    initial: list[JobStatus], steps: list[list[tuple[str, int, JobStatus]]]
) -> list[dict[str, BatchJob]]:
    """The project as each poll sees it, from random operations between polls."""
    jobs = {f"job-{i}": _job(i, status) for i, status in enumerate(initial)}
    created = len(initial)
    snapshots = [dict(jobs)]
    for moment, step in enumerate(steps, start=1):
        when = _T0 + timedelta(days=1, seconds=moment)
        for op, pick, status in step:
            alive = sorted(jobs)
            unfinished = sorted(i for i, j in jobs.items() if not j.is_final)
            if op == "create":
                jobs[f"job-{created}"] = _job(created, status)
                created += 1
            elif op == "delete" and alive:
                del jobs[alive[pick % len(alive)]]
            elif op == "move" and unfinished:
                job = jobs[unfinished[pick % len(unfinished)]]
                jobs[job.job_id] = attrs.evolve(
                    job, status=status, status_last_updated_at=when
                )
            elif op == "progress" and unfinished:
                job = jobs[unfinished[pick % len(unfinished)]]
                jobs[job.job_id] = attrs.evolve(
                    job, task_success_count=job.task_success_count + 1
                )
        snapshots.append(dict(jobs))
    return snapshots


async def _events_over(
    snapshots: list[dict[str, BatchJob]], **options: object
) -> list[JobEvent]:
    project = Project()

    async def sleep(_: float) -> None:
        project.sleeps += 1
        if project.sleeps == len(snapshots):
            raise _Over
        project.jobs = snapshots[project.sleeps]

    project.jobs = snapshots[0]
    return await project.run(len(snapshots), sleep=sleep, **options)


def _by_job(events: list[JobEvent]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for e in events:
        assert e.job is not None
        out.setdefault(e.job.job_id, []).append((e.kind.value, e.event_id))
    return out


_OPS = st.tuples(
    st.sampled_from(["create", "delete", "move", "move", "progress"]),
    st.integers(0, 10_000),
    st.sampled_from(_STATUSES),
)


class TestSameEventsAsAFullReList:
    @given(
        initial=st.lists(st.sampled_from(_STATUSES), max_size=40),
        steps=st.lists(st.lists(_OPS, max_size=5), min_size=1, max_size=10),
        page_size=st.integers(2, 7),
        show=st.booleans(),
        only_unfinished=st.booleans(),
    )
    async def test_incremental_and_full_polls_yield_the_same_events(
        self,
        initial: list[JobStatus],
        steps: list[list[tuple[str, int, JobStatus]]],
        page_size: int,
        show: bool,
        only_unfinished: bool,
    ) -> None:
        """Creations, transitions, progress, deletions, stragglers: the
        incremental watch tells each job's changes as a re-list every poll does,
        in the same order, with the same ids."""
        snapshots = _history(initial, steps)
        common = {"page_size": page_size, "only_unfinished": only_unfinished}
        full = await _events_over(snapshots, reconcile_every=1, **common)
        incremental = await _events_over(
            snapshots,
            reconcile_every=10_000,
            **({} if show else {"show_job": None}),
            **common,
        )

        assert _by_job(full) == _by_job(incremental)


class TestWatchJobsArguments:
    """IefClient.watch_jobs refuses at the call, before any request (issue 14)."""

    @pytest.mark.parametrize(
        ("ids", "kwargs", "error"),
        [
            ([], {}, ValueError),  # would wait for ever
            (["p1"], {"interval": 0}, ValueError),  # sent 500 requests a second
            (["p1"], {"interval": -5.0}, ValueError),
            (["p1"], {"shard": (2, 2)}, ValueError),
            (["p1"], {"reconcile_every": 0}, ValueError),
            ("p1", {}, TypeError),  # a lone string is not a list of projects
        ],
    )
    def test_refused_at_the_call(
        self,
        client: IefClient,
        mocked: aioresponses,
        ids: list[str],
        kwargs: dict[str, object],
        error: type[Exception],
    ) -> None:
        with pytest.raises(error):
            client.watch_jobs(ids, **kwargs)  # type: ignore[arg-type]
        assert 0 == client.requests_sent
