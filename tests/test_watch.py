"""watch(): events from repeated listings, driven by a fake project lister."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from ief_jobs import BatchJob, JobEvent, JobEventKind, JobStatus, JobType, ServerError
from ief_jobs.watch import watch

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


class Lister:
    """Serves poll n the n-th scripted listing (the last one ever after), on a
    fake clock that moves only when the watch sleeps; counts the calls."""

    def __init__(self, *polls: Sequence[BatchJob] | Exception) -> None:
        self.polls = list(polls)
        self.done = 0  # polls finished: the watch sleeps once after each
        self.lists = 0
        self.counts = 0
        self.now = 1_700_000_000.0

    def _current(self) -> Sequence[BatchJob] | Exception:
        return self.polls[min(self.done, len(self.polls) - 1)]

    async def list_project(self, _: str) -> Sequence[BatchJob]:
        current = self._current()
        self.lists += 1
        if isinstance(current, Exception):
            raise current
        return current

    async def count_project(self, _: str) -> int:
        self.counts += 1
        current = self._current()
        if isinstance(current, Exception):
            raise current
        return len(current)

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.done += 1
        await asyncio.sleep(0)  # let the test's other tasks run

    def watch(self, **kwargs: object) -> AsyncIterator[JobEvent]:
        return watch(
            ["p1"],
            list_project=self.list_project,
            count_project=self.count_project,
            interval=10,
            clock=lambda: self.now,
            sleep=self.sleep,
            **kwargs,  # type: ignore[arg-type]
        )


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
        """All final: counted, not listed, until the count moves."""
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
        assert (5, 2) == (lister.counts, lister.lists)  # the first, and the new one


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
            polls = lister.lists
            for _ in range(20):  # the consumer is busy elsewhere a while
                await asyncio.sleep(0)

            assert polls == lister.lists
            await anext(stream)
            assert polls + 1 == lister.lists

    async def test_polls_are_an_interval_apart(self) -> None:
        lister = Lister(*[[_job(1, JobStatus.RUNNING, done=i)] for i in range(10)])
        started = lister.now
        stream = lister.watch(skip_idle=False)
        async with contextlib.aclosing(stream):
            for _ in range(3):
                await anext(stream)

        assert started + 30 == lister.now

    async def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="interval"):
            await anext(Lister([]).watch(report_after=0))
