"""
Change events over repeated listings, for event-driven pipelines.

IEF has no push channel, so `watch` re-lists each project on an interval and
turns the differences into `JobEvent`s: a job appeared, its status or task
counts changed, it finished, it disappeared, or a project keeps failing.

Like the page walk, it is a function of callables (list a project, count a
project) rather than of HTTP, so tests drive it with a fake; `IefClient.watch_jobs`
wires it to the client.

* Polls run all projects at once; events are yielded project by project, each
  project's in the order of its jobs' creation, each job's in the order they
  happened. A job's status transitions are reported once each, in order, as
  far as polling can see them (a job that moves twice between two polls shows
  one transition).
* The generator polls only when asked for more: a consumer slower than the
  interval delays the next poll instead of growing a buffer.
* A failed poll (after the client's own retries) ends nothing: the project keeps
  its last known state, and every *report_after* failures in a row yield one
  ``project_failed`` event.
* With *skip_idle*, a project whose watched jobs are all final is not re-listed
  while one request with ``limit=1`` shows its ``job_count`` unchanged. (A
  deletion and a creation between two polls leave the count the same: such a
  project is re-listed when the count next moves.)
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime

import attrs

from .errors import IefError
from .models import BatchJob, JobStatus

__all__ = ["JobEvent", "JobEventKind", "watch"]


class JobEventKind(enum.StrEnum):
    """What a `JobEvent` reports."""

    CREATED = "created"  # a job appeared (or, with emit_existing, was there at start)
    STATUS_CHANGED = "status_changed"  # previous.status -> job.status
    PROGRESS = "progress"  # task counts changed, status did not
    FINISHED = "finished"  # the job reached a final status (after its status_changed)
    DELETED = "deleted"  # the job is gone; *job* is the last version seen
    PROJECT_FAILED = "project_failed"  # polls of the project keep failing


@attrs.frozen(kw_only=True)
class JobEvent:
    """
    One change a watch saw.

    *job* is the job as now seen (for ``deleted``, as last seen; None for
    ``project_failed``), *previous* the version before the change where there
    is one, *observed_at* when the poll that saw it ended (aware UTC).
    """

    kind: JobEventKind
    project_id: str
    job: BatchJob | None
    previous: BatchJob | None = None
    observed_at: datetime
    error: IefError | None = None  # project_failed: the latest failure
    failures: int = 0  # project_failed: failed polls in a row

    @property
    def old_status(self) -> JobStatus | str | None:
        """The status before the change (``status_changed``, ``finished``)."""
        return None if self.previous is None else self.previous.status

    @property
    def new_status(self) -> JobStatus | str | None:
        """The status the job has now."""
        return None if self.job is None else self.job.status


def _counts(job: BatchJob) -> tuple[int, int, int]:
    return job.task_total_count, job.task_success_count, job.task_failed_count


class _Project:
    """What a watch remembers of one project between polls."""

    __slots__ = ("count", "failures", "ignored", "jobs", "listed")

    def __init__(self) -> None:
        self.listed = False  # a first listing succeeded: changes can be told
        self.jobs: dict[str, BatchJob] = {}  # the jobs watched, by id
        self.ignored: set[str] = set()  # finished jobs no longer followed
        self.count = -1  # job_count at the last listing
        self.failures = 0

    @property
    def idle(self) -> bool:
        return self.listed and all(job.is_final for job in self.jobs.values())


def _changes(
    project_id: str,
    state: _Project,
    listed: Sequence[BatchJob],
    observed_at: datetime,
    *,
    emit_existing: bool,
    only_unfinished: bool,
) -> list[JobEvent]:
    """The events between what *state* knew and *listed*; updates *state*."""
    events: list[JobEvent] = []

    def event(
        kind: JobEventKind, job: BatchJob, previous: BatchJob | None = None
    ) -> None:
        events.append(
            JobEvent(
                kind=kind,
                project_id=project_id,
                job=job,
                previous=previous,
                observed_at=observed_at,
            )
        )

    first = not state.listed
    current: dict[str, BatchJob] = {}
    for job in sorted(listed, key=lambda j: j.created_at):  # oldest first
        if job.job_id in state.ignored:
            continue
        old = state.jobs.get(job.job_id)
        if old is None:
            if only_unfinished and job.is_final:
                state.ignored.add(job.job_id)  # finished before we followed it
                continue
            if not first or emit_existing:
                event(JobEventKind.CREATED, job)
            if not first and job.is_final:
                event(JobEventKind.FINISHED, job)
        elif old.status != job.status:
            event(JobEventKind.STATUS_CHANGED, job, old)
            if job.is_final and not old.is_final:
                event(JobEventKind.FINISHED, job, old)
        elif _counts(old) != _counts(job):
            event(JobEventKind.PROGRESS, job, old)
        if only_unfinished and job.is_final:
            state.ignored.add(job.job_id)
        else:
            current[job.job_id] = job
    for job_id, old in state.jobs.items():
        if job_id not in current and job_id not in state.ignored:
            event(JobEventKind.DELETED, old)
    # ids of finished jobs that are gone need not be remembered
    state.ignored &= {job.job_id for job in listed}
    state.jobs = current
    state.count = len(listed)
    state.listed = True
    return events


async def watch(
    project_ids: Iterable[str],
    *,
    list_project: Callable[[str], Awaitable[Sequence[BatchJob]]],
    count_project: Callable[[str], Awaitable[int]],
    interval: float = 30.0,
    emit_existing: bool = False,
    only_unfinished: bool = False,
    skip_idle: bool = True,
    report_after: int = 3,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[JobEvent, None]:
    """
    Poll every project each *interval* seconds; yield what changed.

    The first successful listing of a project is its baseline: it yields
    nothing, or a ``created`` event per job with *emit_existing*. With
    *only_unfinished*, jobs already final are not followed, and a job that
    finishes is dropped after its ``finished`` event (no ``deleted`` later).
    *clock* (Unix seconds) and *sleep* are for tests.
    """
    if interval < 0 or report_after < 1:
        msg = "interval must be >= 0 and report_after >= 1"
        raise ValueError(msg)
    states = {project_id: _Project() for project_id in dict.fromkeys(project_ids)}

    async def poll(project_id: str) -> Sequence[BatchJob] | IefError | None:
        state = states[project_id]
        try:
            if skip_idle and state.idle:
                count = await count_project(project_id)
                if count == state.count:
                    return None  # nothing can have changed that we follow
            return await list_project(project_id)
        except IefError as exc:  # reported as an event, never the end of the watch
            return exc

    while True:
        started = clock()
        async with asyncio.TaskGroup() as group:
            tasks = {pid: group.create_task(poll(pid)) for pid in states}
        observed_at = datetime.fromtimestamp(clock(), UTC)
        for project_id, task in tasks.items():
            result, state = task.result(), states[project_id]
            if isinstance(result, IefError):
                state.failures += 1
                if state.failures % report_after == 0:
                    yield JobEvent(
                        kind=JobEventKind.PROJECT_FAILED,
                        project_id=project_id,
                        job=None,
                        observed_at=observed_at,
                        error=result,
                        failures=state.failures,
                    )
                continue
            state.failures = 0
            if result is None:
                continue
            for change in _changes(
                project_id,
                state,
                result,
                observed_at,
                emit_existing=emit_existing,
                only_unfinished=only_unfinished,
            ):
                yield change
        await sleep(max(0.0, started + interval - clock()))
