"""
Change events over repeated listings, for event-driven pipelines.

IEF has no push channel, so `watch` polls each project on an interval and
turns the differences into `JobEvent`s: a job appeared, its status or task
counts changed, it finished, it disappeared, or a project keeps failing.

Like the page walk, it is a function of callables (read one page newest first,
list a whole project, show one job) rather than of HTTP, so tests drive it with
a fake; `IefClient.watch_jobs` wires it to the client.

A poll costs what changed, not what exists:

* It reads the head of the listing (newest first) until it meets a job it knows,
  and on only as far as the oldest unfinished job it follows. An unfinished job
  deeper than that (a straggler) is refreshed on its own (*show_job*) when that
  costs fewer requests than reading down to it. Finished jobs never change, so
  they are not read again.
* Pages overlap by one record: if a page does not hold the last record of the
  one before, or ``job_count`` moved between the poll's pages, jobs came or went
  while it read, and the poll re-lists the project whole instead.
* What the poll did not read it checks by ``job_count``: when the count differs
  from the jobs it knows after the poll, a job it did not see was deleted (or
  created out of order), and the project is re-listed whole to reconcile. So is
  each project every *reconcile_every* polls (staggered, so projects do not
  re-list in the same poll), as a safety net, and on its first poll.
* A project whose jobs are all final costs one request with ``limit=1`` per poll
  while nothing changes (*skip_idle*).

The events do not depend on how a poll read: a re-list of every project every
poll (``reconcile_every=1``) yields the same events, in the same order for each
job (a property test holds the two together).

* Polls of all projects run at once, at most *concurrency* at a time; events are
  yielded project by project, each project's in the order of its jobs'
  creation, each job's in the order they happened, deletions last. A job's
  status transitions are reported once each, in order, as far as polling can
  see them (a job that moves twice between two polls shows one transition).
* The generator polls only when asked for more: a consumer slower than the
  interval delays the next poll instead of growing a buffer.
* A failed poll (after the client's own retries) ends nothing: the project keeps
  its last known state, and every *report_after* failures in a row yield one
  ``project_failed`` event.

**Checkpoint.** With a `Checkpoint` (`SqliteCheckpoint`, `RedisCheckpoint`) the
watch survives restarts. Each poll's changes and events are written before its
first event is yielded; an event counts as taken when the consumer asks for the
next one, and on a clean stop (``break`` with ``aclosing``, ``aclose()``, the
task cancelled, Ctrl-C) the event in hand counts as taken too. A watch that
starts on a checkpoint first delivers what a cut-off poll had not, then its first
poll reports everything that changed while nobody watched (created,
status_changed from the status last reported, finished, deleted). Delivery is
at least once: after a crash, only the event in hand at the crash comes again,
with the same ``event_id``; after a clean stop nothing comes again.

**Event ids.** ``event_id`` is a hash of the project, the job, the kind and the
job's state that defines the change: its creation time for ``created``; the old
and new status and ``status_last_updated_at`` for ``status_changed``; the final
status and ``status_last_updated_at`` for ``finished``; status and task counts
for ``progress``; nothing more for ``deleted``. So the same change has the same
id in any process, before and after a restart, and a sink can drop a repeat.
(``project_failed`` is not a change of a job: its id is per failure count and
moment.)

**Shards.** ``shard=(index, count)`` keeps the projects whose stable hash (BLAKE2
of the id, not Python's salted `hash`) modulo *count* is *index*: *count*
processes given the same project list split it with no overlap and no gap. A
shard that gets no project (more shards than projects) sends no request and
yields nothing.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import hashlib
import math
import time
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from typing import Final, TypeVar

import attrs
import orjson

from ._telemetry import NO_OBSERVER, WatchObserver
from .checkpoint import Checkpoint, ProjectChanges, SavedProject
from .errors import IefError
from .models import BatchJob, JobPage, JobStatus, JobType

__all__ = [
    "DEFAULT_RECONCILE_EVERY",
    "JobEvent",
    "JobEventKind",
    "ReadPage",
    "shard_of",
    "watch",
]

DEFAULT_RECONCILE_EVERY: Final = 120  # an hour of 30 s polls per full re-list

ReadPage = Callable[[str, int, int], Awaitable[JobPage]]
"""``read_page(project_id, offset, limit) -> JobPage``, newest first."""


class JobEventKind(enum.StrEnum):
    """What a `JobEvent` reports."""

    CREATED = "created"  # a job appeared (or, with emit_existing, was there at start)
    STATUS_CHANGED = "status_changed"  # previous.status -> job.status
    PROGRESS = "progress"  # task counts changed, status did not
    FINISHED = "finished"  # the job reached a final status (after its status_changed)
    DELETED = "deleted"  # the job is gone; *job* is the last version seen
    PROJECT_FAILED = "project_failed"  # polls of the project keep failing


def _event_id(event: JobEvent) -> str:
    """The change's stable id: see the module's docstring."""
    job, kind = event.job, event.kind
    parts: list[object] = [kind.value, event.project_id]
    if job is None:
        parts += [event.failures, event.observed_at.timestamp()]
    else:
        parts.append(job.job_id)
        if kind == JobEventKind.CREATED:
            parts.append(job.created_at.timestamp())
        elif kind == JobEventKind.STATUS_CHANGED:
            old = None if event.previous is None else event.previous.status
            parts += [old, job.status, job.status_last_updated_at.timestamp()]
        elif kind == JobEventKind.FINISHED:
            parts += [job.status, job.status_last_updated_at.timestamp()]
        elif kind == JobEventKind.PROGRESS:
            parts += [job.status, *_counts(job)]
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@attrs.frozen(kw_only=True)
class JobEvent:
    """
    One change a watch saw.

    *job* is the job as now seen (for ``deleted``, as last seen; None for
    ``project_failed``), *previous* the version before the change where there
    is one, *observed_at* when the poll that saw it ended (aware UTC).
    *event_id* is the same for the same change in any process and after a
    restart (see `ief_jobs.watch`): a sink that must not apply a change twice
    drops an id it has seen.
    """

    kind: JobEventKind
    project_id: str
    job: BatchJob | None
    previous: BatchJob | None = None
    observed_at: datetime
    error: IefError | None = None  # project_failed: the latest failure
    failures: int = 0  # project_failed: failed polls in a row
    event_id: str = attrs.field(default=attrs.Factory(_event_id, takes_self=True))

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


def shard_of(project_id: str, count: int) -> int:
    """
    The shard (``0 <= shard < count``) *project_id* belongs to, the same in
    every process: a BLAKE2 hash of the id, not Python's salted `hash`.
    """
    digest = hashlib.blake2b(project_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


# -- records as a checkpoint stores them -----------------------------------------


E = TypeVar("E", bound=enum.StrEnum)


def _enum_or_str(kind: type[E], value: str) -> E | str:
    try:
        return kind(value)
    except ValueError:
        return value  # a value this version does not know stays a string


def _pack_job(job: BatchJob) -> list[object]:
    return [
        job.job_id,
        job.job_name,
        str(job.job_type),
        job.created_at.timestamp(),
        str(job.status),
        job.task_total_count,
        job.task_success_count,
        job.task_failed_count,
        job.status_last_updated_at.timestamp(),
        job.description,
    ]


def _unpack_job(fields: list[object]) -> BatchJob:
    (jid, name, job_type, created, status, total, ok, failed, moved, text) = fields
    return BatchJob(
        job_id=str(jid),
        job_name=str(name),
        job_type=_enum_or_str(JobType, str(job_type)),
        created_at=datetime.fromtimestamp(float(str(created)), UTC),
        status=_enum_or_str(JobStatus, str(status)),
        task_total_count=int(str(total)),
        task_success_count=int(str(ok)),
        task_failed_count=int(str(failed)),
        status_last_updated_at=datetime.fromtimestamp(float(str(moved)), UTC),
        description=str(text),
    )


def _encode_known(job: BatchJob, *, followed: bool) -> bytes:
    return orjson.dumps([*_pack_job(job), followed])


def _encode_event(event: JobEvent) -> bytes:
    return orjson.dumps(
        {
            "kind": event.kind.value,
            "id": event.event_id,
            "at": event.observed_at.timestamp(),
            "job": None if event.job is None else _pack_job(event.job),
            "previous": None if event.previous is None else _pack_job(event.previous),
        }
    )


def _decode_event(project_id: str, blob: bytes) -> JobEvent:
    data = orjson.loads(blob)
    return JobEvent(
        kind=JobEventKind(data["kind"]),
        project_id=project_id,
        job=None if data["job"] is None else _unpack_job(data["job"]),
        previous=None if data["previous"] is None else _unpack_job(data["previous"]),
        observed_at=datetime.fromtimestamp(data["at"], UTC),
        event_id=data["id"],
    )


# -- what a watch remembers of one project ---------------------------------------


class _Project:
    """Every job of one project's listing as last seen, and what follows from it."""

    __slots__ = (
        "dropped",
        "failures",
        "jobs",
        "listed",
        "open",
        "order",
        "pending",
        "taken",
    )

    def __init__(self) -> None:
        self.listed = False  # a first listing succeeded: changes can be told
        self.jobs: dict[str, BatchJob] = {}  # the whole listing, by id
        # (created_at, id), oldest first: positions and ranges without a sort
        self.order: list[tuple[datetime, str]] = []
        self.open: set[str] = set()  # followed and not final: read every poll
        self.dropped: set[str] = set()  # only_unfinished: known, not followed
        self.failures = 0
        self.pending: list[JobEvent] = []  # loaded: a cut-off poll's events
        self.taken = 0

    @classmethod
    def restore(cls, project_id: str, saved: SavedProject) -> _Project:
        state = cls()
        state.listed = True
        jobs = []
        for blob in saved.jobs.values():
            *fields, followed = orjson.loads(blob)
            jobs.append((_unpack_job(fields), bool(followed)))
        # oldest first, so each put appends: 100,000 jobs load in linear time
        jobs.sort(key=lambda pair: (pair[0].created_at, pair[0].job_id))
        for job, followed in jobs:
            state.put(job, followed=followed)
        state.pending = [_decode_event(project_id, b) for b in saved.pending]
        state.taken = saved.taken
        return state

    def put(self, job: BatchJob, *, followed: bool) -> None:
        job_id = job.job_id
        old = self.jobs.get(job_id)
        if old is None:
            bisect.insort(self.order, (job.created_at, job_id))
        elif old.created_at != job.created_at:  # not in IEF; keep order exact
            self.order.remove((old.created_at, job_id))
            bisect.insort(self.order, (job.created_at, job_id))
        self.jobs[job_id] = job
        if followed and not job.is_final:
            self.open.add(job_id)
        else:
            self.open.discard(job_id)
        if followed:
            self.dropped.discard(job_id)
        else:
            self.dropped.add(job_id)

    def remove(self, job_id: str) -> None:
        job = self.jobs.pop(job_id)
        index = bisect.bisect_left(self.order, (job.created_at, job_id))
        del self.order[index]
        self.open.discard(job_id)
        self.dropped.discard(job_id)

    def rank(self, job: BatchJob) -> int:
        """How many known jobs sort before *job* newest first (its position)."""
        return len(self.order) - bisect.bisect_right(
            self.order, (job.created_at, job.job_id)
        )

    def newer_than(self, moment: datetime) -> list[str]:
        """The ids of known jobs created after *moment*."""
        start = bisect.bisect_right(self.order, (moment, "\U0010ffff"))
        return [job_id for _, job_id in self.order[start:]]


@attrs.frozen
class _Options:
    emit_existing: bool
    only_unfinished: bool


def _diff(
    project_id: str,
    state: _Project,
    seen: Mapping[str, BatchJob | None],
    observed_at: datetime,
    options: _Options,
) -> tuple[list[JobEvent], ProjectChanges]:
    """
    The events between what *state* knew and what a poll *seen* (None: gone);
    updates *state* and says what changed for a checkpoint.
    """
    events: list[JobEvent] = []
    upsert: dict[str, bytes] = {}
    delete: list[str] = []
    first = not state.listed

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

    present = sorted(
        (job for job in seen.values() if job is not None),
        key=lambda j: (j.created_at, j.job_id),
    )
    for job in present:  # oldest first
        job_id = job.job_id
        old = state.jobs.get(job_id)
        if old == job:
            continue
        followed = job_id not in state.dropped
        if old is None:
            followed = not (options.only_unfinished and job.is_final)
            if followed and (not first or options.emit_existing):
                event(JobEventKind.CREATED, job)
            if followed and not first and job.is_final:
                event(JobEventKind.FINISHED, job)
        elif followed:
            if old.status != job.status:
                event(JobEventKind.STATUS_CHANGED, job, old)
                if job.is_final and not old.is_final:
                    event(JobEventKind.FINISHED, job, old)
            elif _counts(old) != _counts(job):
                event(JobEventKind.PROGRESS, job, old)
            if options.only_unfinished and job.is_final:
                followed = False  # told it finished: no deleted later
        state.put(job, followed=followed)
        upsert[job_id] = _encode_known(job, followed=followed)
    gone = sorted(
        (state.jobs[job_id] for job_id, job in seen.items() if job is None),
        key=lambda j: (j.created_at, j.job_id),
    )
    for old in gone:
        if old.job_id not in state.dropped:
            event(JobEventKind.DELETED, old)
        state.remove(old.job_id)
        delete.append(old.job_id)
    state.listed = True
    return events, ProjectChanges(
        project_id, upsert, delete, [_encode_event(e) for e in events]
    )


def _pages(records: int, size: int) -> int:
    """Requests to read *records* from the top, pages overlapping by one."""
    if records <= size or size < 2:  # noqa: PLR2004 (no overlap below two)
        return max(1, math.ceil(records / max(size, 1)))
    return 1 + math.ceil((records - size) / (size - 1))


class _Reader:
    """One project's poll: the reads and the choice between them."""

    __slots__ = ("list_project", "page_size", "read_page", "show_job", "skip_idle")

    def __init__(
        self,
        read_page: ReadPage,
        list_project: Callable[[str], Awaitable[Sequence[BatchJob]]],
        show_job: Callable[[str, str], Awaitable[BatchJob | None]] | None,
        page_size: int,
        skip_idle: bool,
    ) -> None:
        self.read_page = read_page
        self.list_project = list_project
        self.show_job = show_job
        self.page_size = page_size
        self.skip_idle = skip_idle

    async def full(
        self, project_id: str, state: _Project
    ) -> dict[str, BatchJob | None]:
        """Re-list the project whole: every known job not listed is gone."""
        listed = await self.list_project(project_id)
        seen: dict[str, BatchJob | None] = dict.fromkeys(state.jobs)
        seen.update((job.job_id, job) for job in listed)
        return seen

    def plan(self, state: _Project) -> list[BatchJob]:
        """
        The unfinished jobs to read down to, newest first; the others are
        shown one by one, where that costs fewer requests.
        """
        followed = sorted((state.jobs[i] for i in state.open), key=state.rank)
        if self.show_job is None:
            return followed
        best, best_cost = 0, 1 + len(followed)
        for read, job in enumerate(followed, start=1):
            cost = _pages(state.rank(job) + 1, self.page_size) + len(followed) - read
            if cost <= best_cost:
                best, best_cost = read, cost
        return followed[:best]

    async def incremental(
        self, project_id: str, state: _Project
    ) -> dict[str, BatchJob | None] | None:
        """
        Read the head and the unfinished jobs; None when the listing moved
        under the reads or its count shows what they missed (re-list whole).
        """
        to_read = self.plan(state)
        target = to_read[-1].created_at if to_read else None
        size = self.page_size
        limit = 1 if self.skip_idle and target is None else size
        budget = _pages(len(state.jobs) + 1, size) + 2  # never dearer than a re-list
        seen: dict[str, BatchJob | None] = {}
        offset, count, overlap = 0, -1, None
        met_known, at_end, oldest = False, False, None
        while True:
            budget -= 1
            if budget < 0:
                return None
            page = await self.read_page(project_id, offset, limit)
            jobs = page.jobs[:limit]
            if count == -1:
                count = page.job_count
            elif page.job_count != count:
                return None  # jobs came or went while the poll read
            if overlap is not None and all(j.job_id != overlap for j in jobs):
                # records moved up between two reads: one may have slipped past
                # (the count shows that too when only the head grows; this does
                # whatever the order of creation)
                return None
            for job in jobs:
                seen[job.job_id] = job
                met_known = met_known or job.job_id in state.jobs
            at_end = not jobs or offset + len(jobs) >= page.job_count
            if jobs:
                oldest = jobs[-1].created_at
            passed = target is None or (oldest is not None and oldest < target)
            if at_end or (met_known and passed):
                break
            # overlap by one record: the next page shows whether records moved
            overlap = jobs[-1].job_id if len(jobs) > 1 else None
            offset += len(jobs) - 1 if len(jobs) > 1 else len(jobs)
            limit = size
        covered = state.jobs if at_end or oldest is None else state.newer_than(oldest)
        for job_id in covered:
            seen.setdefault(job_id, None)
        stragglers = [i for i in state.open if i not in seen]
        if stragglers and self.show_job is not None:
            show = self.show_job
            shown = await asyncio.gather(*(show(project_id, i) for i in stragglers))
            seen.update(zip(stragglers, shown, strict=True))
        added = sum(
            1 for i, job in seen.items() if job is not None and i not in state.jobs
        )
        removed = sum(1 for i, job in seen.items() if job is None and i in state.jobs)
        if len(state.jobs) + added - removed != count:
            return None  # a job the poll did not see was deleted: reconcile
        return seen


def _check(
    *,
    interval: float,
    report_after: int,
    reconcile_every: int,
    page_size: int,
    concurrency: int,
    shard: tuple[int, int] | None,
) -> None:
    if isinstance(interval, bool) or not (
        isinstance(interval, int | float) and math.isfinite(interval) and interval > 0
    ):
        msg = f"interval must be a number of seconds above 0, not {interval!r}"
        raise ValueError(msg)
    for name, value in (
        ("report_after", report_after),
        ("reconcile_every", reconcile_every),
        ("page_size", page_size),
        ("concurrency", concurrency),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            msg = f"{name} must be a whole number of at least 1, not {value!r}"
            raise ValueError(msg)
    if shard is not None:
        match shard:
            case (int() as index, int() as count) if (
                not isinstance(index, bool)
                and not isinstance(count, bool)
                and 0 <= index < count
            ):
                pass
            case _:
                msg = (
                    "shard must be (index, count) with 0 <= index < count, "
                    f"not {shard!r}"
                )
                raise ValueError(msg)


def _report_round(
    observer: WatchObserver,
    results: dict[str, tuple[list[JobEvent], ProjectChanges] | IefError],
    report_after: int,
    states: dict[str, _Project],
) -> None:
    """Tell *observer* how the round went, before its events are yielded."""
    kinds: Counter[str] = Counter()
    failures: dict[str, Exception] = {}
    for project_id, result in results.items():
        if isinstance(result, IefError):
            failures[project_id] = result
            # the failure this round makes will be reported as an event
            if (states[project_id].failures + 1) % report_after == 0:
                kinds[JobEventKind.PROJECT_FAILED.value] += 1
        else:
            kinds.update(event.kind.value for event in result[0])
    observer.round_done(
        polled=len(results) - len(failures), failures=failures, events=kinds
    )


def watch(
    project_ids: Iterable[str],
    *,
    read_page: ReadPage,
    list_project: Callable[[str], Awaitable[Sequence[BatchJob]]],
    show_job: Callable[[str, str], Awaitable[BatchJob | None]] | None = None,
    interval: float = 30.0,
    emit_existing: bool = False,
    only_unfinished: bool = False,
    skip_idle: bool = True,
    report_after: int = 3,
    reconcile_every: int = DEFAULT_RECONCILE_EVERY,
    page_size: int = 100,
    concurrency: int = 32,
    checkpoint: Checkpoint | None = None,
    shard: tuple[int, int] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    observer: WatchObserver | None = None,
) -> AsyncGenerator[JobEvent, None]:
    """
    Poll every project each *interval* seconds; yield what changed.

    Arguments are checked here, before the generator exists (so before any
    request). *read_page* reads one page newest first, *list_project* lists a
    project whole, *show_job* reads one job (None when it is gone); without
    *show_job* every unfinished job is read from the listing.

    The first successful listing of a project is its baseline: it yields
    nothing, or a ``created`` event per job with *emit_existing*. With
    *only_unfinished*, jobs already final are not followed, and a job that
    finishes is dropped after its ``finished`` event (no ``deleted`` later).
    *reconcile_every* polls a project is re-listed whole (1: every poll).
    *concurrency* bounds the projects polled at once; *checkpoint* and *shard*
    as the module describes. *clock* (Unix seconds) and *sleep* are for tests.
    *observer* hears of each poll round (telemetry and health).

    Raises:
        ValueError: No project, a bad *interval* (it must be above 0),
            *shard* or bound.
    """
    ids = list(dict.fromkeys(project_ids))
    if not ids:
        msg = "no project to watch: give at least one project id"
        raise ValueError(msg)
    _check(
        interval=interval,
        report_after=report_after,
        reconcile_every=reconcile_every,
        page_size=page_size,
        concurrency=concurrency,
        shard=shard,
    )
    if shard is not None:
        ids = [pid for pid in ids if shard_of(pid, shard[1]) == shard[0]]
    reader = _Reader(read_page, list_project, show_job, page_size, skip_idle)
    return _watch(
        ids,
        reader,
        _Options(emit_existing=emit_existing, only_unfinished=only_unfinished),
        interval=interval,
        report_after=report_after,
        reconcile_every=reconcile_every,
        concurrency=concurrency,
        checkpoint=checkpoint,
        clock=clock,
        sleep=sleep,
        observer=NO_OBSERVER if observer is None else observer,
    )


async def _watch(
    ids: list[str],
    reader: _Reader,
    options: _Options,
    *,
    interval: float,
    report_after: int,
    reconcile_every: int,
    concurrency: int,
    checkpoint: Checkpoint | None,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    observer: WatchObserver = NO_OBSERVER,
) -> AsyncGenerator[JobEvent, None]:
    states: dict[str, _Project] = {}
    # staggered: each project's safety re-list falls in a poll of its own
    phase = {pid: shard_of(pid, reconcile_every) for pid in ids}

    async def each(work: Callable[[str], Awaitable[None]]) -> None:
        # at most *concurrency* projects at once, not one task per project
        todo = iter(ids)

        async def worker() -> None:
            for project_id in todo:
                await work(project_id)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(concurrency, len(ids))):
                    group.create_task(worker())
        except ExceptionGroup as failed:
            # one worker's error (a checkpoint that fails, a bug) stopped them
            # all: raise it as it came, not wrapped in a group
            raise failed.exceptions[0]  # noqa: B904 (its own traceback says where)

    async def load(project_id: str) -> None:
        saved = None if checkpoint is None else await checkpoint.load(project_id)
        states[project_id] = (
            _Project() if saved is None else _Project.restore(project_id, saved)
        )

    polls = 0
    results: dict[str, tuple[list[JobEvent], ProjectChanges] | IefError] = {}

    async def poll(project_id: str) -> None:
        state = states[project_id]
        try:
            seen = None
            if state.listed and (polls + phase[project_id]) % reconcile_every:
                seen = await reader.incremental(project_id, state)
            if seen is None:
                seen = await reader.full(project_id, state)
        except IefError as exc:  # reported as an event, never the end of the watch
            results[project_id] = exc
            return
        observed_at = datetime.fromtimestamp(clock(), UTC)
        results[project_id] = _diff(project_id, state, seen, observed_at, options)

    in_hand: tuple[str, int] | None = None  # the event the consumer holds
    try:
        await each(load)
        for project_id in ids:  # first, what a cut-off poll had not delivered
            state = states[project_id]
            for index in range(state.taken, len(state.pending)):
                in_hand = (project_id, index + 1)
                yield state.pending[index]
                if checkpoint is not None:
                    await checkpoint.mark_taken(*in_hand)
                in_hand = None
            state.pending = []
        while True:
            started = clock()
            polls += 1
            results.clear()
            with observer.poll_round(len(ids)):  # no yield inside: see there
                await each(poll)
            changes = [
                result[1]
                for pid in ids
                if not isinstance(result := results[pid], IefError)
                and (result[0] or result[1].upsert or result[1].delete)
            ]
            if checkpoint is not None and changes:
                with observer.checkpoint_write():
                    await checkpoint.save(changes)
            _report_round(observer, results, report_after, states)
            for project_id in ids:
                result, state = results[project_id], states[project_id]
                if isinstance(result, IefError):
                    state.failures += 1
                    if state.failures % report_after == 0:
                        yield JobEvent(
                            kind=JobEventKind.PROJECT_FAILED,
                            project_id=project_id,
                            job=None,
                            observed_at=datetime.fromtimestamp(clock(), UTC),
                            error=result,
                            failures=state.failures,
                        )
                    continue
                state.failures = 0
                for index, event in enumerate(result[0]):
                    in_hand = (project_id, index + 1)
                    yield event
                    if checkpoint is not None:
                        await checkpoint.mark_taken(*in_hand)
                    in_hand = None
            await sleep(max(0.0, started + interval - clock()))
    finally:
        # a clean stop: the event the consumer holds counts as taken
        if in_hand is not None and checkpoint is not None:
            await checkpoint.mark_taken(*in_hand)
