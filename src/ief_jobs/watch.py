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
* Pages overlap by one record, and the listing's boundary check
  (`ief_jobs.listing.Boundary`) holds each page against the one before: if it
  does not hold the last record of the one before, jobs of one ``created_at``
  straddle the boundary, or ``job_count`` moved between the poll's pages, jobs
  came or went while it read, and the poll re-lists the project whole instead.
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
  ``project_failed`` event. A failure no later poll can mend (401, 403, 404,
  IEF.011005) on a project's first poll is reported at once; when every
  project fails so on the first poll, the watch raises that error after their
  ``project_failed`` events.

**Checkpoint.** With a `Checkpoint` (`SqliteCheckpoint`, `RedisCheckpoint`) the
watch survives restarts. Each poll's changes and events are written before its
first event is yielded. An event counts as taken when the consumer asks for the
next one, or stops cleanly (``aclose()``, leaving ``async with`` without an
exception, the task cancelled, Ctrl-C); an exception thrown in (`Stream`
throws the one that leaves ``async with``) keeps it for redelivery. A watch
that starts on a checkpoint first delivers what a cut-off poll had not, then
its first poll reports everything that changed while nobody watched (created,
status_changed from the status last reported, finished, deleted). Delivery is
at least once: after a crash, only the event in hand comes again, with the same
``event_id``; after a clean stop nothing comes again.

The state records what it is the state of (the *scope*: endpoint host,
instance, job type, *only_unfinished*), and a watch with other settings
refuses it with a `StateError` before any event (its changes would all be
false), unless *reset_state* starts it over. A watch first claims its projects
(`Checkpoint.claim`): a second live watcher of any of them fails at start.

**Event ids.** ``event_id`` is a hash of the project, the job, the kind and the
job's state that defines the change: its creation time for ``created``; the old
and new status and ``status_last_updated_at`` for ``status_changed``; the final
status and ``status_last_updated_at`` for ``finished``; status and task counts
for ``progress``; nothing more for ``deleted``. A job that disappears and comes
back is a new occurrence: the state remembers how often each job went (a
tombstone per deleted job, the latest `_TOMBSTONES` per project), and every id
of a later occurrence carries its number. So the same change has the same id in
any process, before and after a restart, and a sink can drop a repeat.
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
import os
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
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Final, Protocol

import attrs
import orjson

from ._checks import check_flag, check_int, check_seconds
from ._telemetry import NO_OBSERVER, WatchObserver
from .checkpoint import Checkpoint, ProjectChanges, SavedProject
from .errors import AuthenticationError, IefError, NotFoundError, StateError
from .forms import pack_job, unpack_job
from .listing import Boundary, Fresh, read_stride, reads_down_to
from .models import BatchJob, JobPage, JobStatus

__all__ = [
    "DEFAULT_RECONCILE_EVERY",
    "JobEvent",
    "JobEventKind",
    "ReadPage",
    "Sink",
    "shard_of",
    "watch",
]

DEFAULT_RECONCILE_EVERY: Final = 120  # an hour of 30 s polls per full re-list
_KEPT_PAGES: Final = 4  # pages of records a poll's reads tell known ids by

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
    if event.job is None:
        parts: list[object] = [event.kind.value, event.project_id]
        parts += [event.failures, event.observed_at.timestamp()]
        return _digest(parts)
    return _change_id(event.kind, event.project_id, event.job, event.previous)


def _change_id(
    kind: JobEventKind,
    project_id: str,
    job: BatchJob,
    previous: BatchJob | None,
    occurrence: int = 0,
) -> str:
    """
    The id of one change of one job: the same inputs, the same id in any
    process; *occurrence* counts the job's earlier disappearances.
    """
    parts: list[object] = [kind.value, project_id, job.job_id]
    if kind == JobEventKind.CREATED:
        parts.append(job.created_at.timestamp())
    elif kind == JobEventKind.STATUS_CHANGED:
        old = None if previous is None else previous.status
        parts += [old, job.status, job.status_last_updated_at.timestamp()]
    elif kind == JobEventKind.FINISHED:
        parts += [job.status, job.status_last_updated_at.timestamp()]
    elif kind == JobEventKind.PROGRESS:
        parts += [job.status, *_counts(job)]
    if occurrence:  # the first occurrence keeps the ids earlier versions gave
        parts.append(f"occurrence {occurrence}")
    return _digest(parts)


def _digest(parts: list[object]) -> str:
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


class Sink(Protocol):
    """
    Where a watch writes its job events so that each arrives once
    (`RedisStreamSink`; see `ief_jobs.sink`). Implement these two to write
    elsewhere.
    """

    async def write(self, events: Sequence[JobEvent]) -> None:
        """Append *events* in order, but any whose ``event_id`` it holds."""

    async def commit(
        self,
        events: Sequence[JobEvent],
        checkpoint: Checkpoint,
        changes: Sequence[ProjectChanges],
    ) -> bool:
        """
        Where the sink shares *checkpoint*'s store: append *events* and save
        *changes* in one transaction, True. Otherwise do nothing: False.
        """


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


def _encode_known(job: BatchJob, *, followed: bool, occurrence: int = 0) -> bytes:
    extra = [occurrence] if occurrence else []  # the first layout had none
    return orjson.dumps([*pack_job(job), followed, *extra])


def _encode_gone(occurrence: int) -> bytes:
    """A tombstone: the job went; *occurrence* is the number its return gets."""
    return orjson.dumps({"gone": occurrence})


def _decode_known(blob: bytes) -> tuple[BatchJob, bool, int] | int:
    """A job record: (job, followed, occurrence), or a tombstone's number."""
    record = orjson.loads(blob)
    if isinstance(record, dict):
        return int(record["gone"])
    *fields, followed = record[:11]
    occurrence = int(record[11]) if len(record) > 11 else 0  # noqa: PLR2004
    return unpack_job(fields), bool(followed), occurrence


_TOMBSTONES: Final = 10_000  # per project: a job that comes back after more is new


def _encode_event(event: JobEvent) -> bytes:
    return orjson.dumps(
        {
            "kind": event.kind.value,
            "id": event.event_id,
            "at": event.observed_at.timestamp(),
            "job": None if event.job is None else pack_job(event.job),
            "previous": None if event.previous is None else pack_job(event.previous),
        }
    )


def _decode_event(project_id: str, blob: bytes) -> JobEvent:
    data = orjson.loads(blob)
    return JobEvent(
        kind=JobEventKind(data["kind"]),
        project_id=project_id,
        job=None if data["job"] is None else unpack_job(data["job"]),
        previous=None if data["previous"] is None else unpack_job(data["previous"]),
        observed_at=datetime.fromtimestamp(data["at"], UTC),
        event_id=data["id"],
    )


# -- what a watch remembers of one project ---------------------------------------


class _Project:
    """Every job of one project's listing as last seen, and what follows from it."""

    __slots__ = (
        "dropped",
        "failures",
        "fresh",
        "gone",
        "jobs",
        "listed",
        "occurrence",
        "open",
        "order",
        "pending",
        "taken",
        "worked",
    )

    def __init__(self) -> None:
        self.listed = False  # a first listing succeeded: changes can be told
        self.fresh = True  # no state kept: the first save replaces what is stored
        self.worked = False  # a poll of this run succeeded
        self.jobs: dict[str, BatchJob] = {}  # the whole listing, by id
        # (created_at, id), oldest first: positions and ranges without a sort
        self.order: list[tuple[datetime, str]] = []
        self.open: set[str] = set()  # followed and not final: read every poll
        self.dropped: set[str] = set()  # only_unfinished: known, not followed
        self.occurrence: dict[str, int] = {}  # jobs seen before: their return
        self.gone: dict[str, int] = {}  # tombstones, oldest first
        self.failures = 0
        self.pending: list[JobEvent] = []  # loaded: a cut-off poll's events
        self.taken = 0

    @classmethod
    def restore(cls, project_id: str, saved: SavedProject, where: str) -> _Project:
        """The project as *saved*; `StateError` naming *where* if it is damaged."""
        state = cls()
        state.listed, state.fresh = True, False
        jobs = []
        for job_id, blob in saved.jobs.items():
            try:
                known = _decode_known(blob)
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                msg = f"{where}: project {project_id}: job {job_id} is damaged ({exc})"
                raise StateError(reason=msg, project_id=project_id) from None
            if isinstance(known, int):
                state.gone[job_id] = known
            else:
                jobs.append(known)
        # oldest first, so each put appends: 100,000 jobs load in linear time
        jobs.sort(key=lambda known: (known[0].created_at, known[0].job_id))
        for job, followed, occurrence in jobs:
            state.put(job, followed=followed)
            if occurrence:
                state.occurrence[job.job_id] = occurrence
        try:
            state.pending = [_decode_event(project_id, b) for b in saved.pending]
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            msg = f"{where}: project {project_id}: a pending event is damaged ({exc})"
            raise StateError(reason=msg, project_id=project_id) from None
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

    def remove(self, job_id: str) -> list[str]:
        """
        Forget *job_id*, keeping a tombstone; the ids of tombstones dropped to
        keep their number bounded.
        """
        job = self.jobs.pop(job_id)
        index = bisect.bisect_left(self.order, (job.created_at, job_id))
        del self.order[index]
        self.open.discard(job_id)
        self.dropped.discard(job_id)
        self.gone[job_id] = self.occurrence.pop(job_id, 0) + 1
        dropped = []
        while len(self.gone) > _TOMBSTONES:
            oldest = next(iter(self.gone))
            del self.gone[oldest]
            dropped.append(oldest)
        return dropped

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
    scope: bytes = b""  # what the watch watches, as its state records it


class _Diff:
    """One poll's events and checkpoint changes for one project, as they build."""

    __slots__ = ("delete", "events", "observed_at", "project_id", "state", "upsert")

    def __init__(self, project_id: str, state: _Project, observed_at: datetime) -> None:
        self.project_id = project_id
        self.state = state
        self.observed_at = observed_at
        self.events: list[JobEvent] = []
        self.upsert: dict[str, bytes] = {}
        self.delete: list[str] = []

    def event(
        self, kind: JobEventKind, job: BatchJob, previous: BatchJob | None = None
    ) -> None:
        occurrence = self.state.occurrence.get(job.job_id, 0)
        self.events.append(
            JobEvent(
                kind=kind,
                project_id=self.project_id,
                job=job,
                previous=previous,
                observed_at=self.observed_at,
                event_id=_change_id(kind, self.project_id, job, previous, occurrence),
            )
        )

    def appeared(self, job: BatchJob, options: _Options, *, first: bool) -> bool:
        """A job new to the state: whether it is followed."""
        occurrence = self.state.gone.pop(job.job_id, 0)
        if occurrence:
            self.state.occurrence[job.job_id] = occurrence
        followed = not (options.only_unfinished and job.is_final)
        if followed and (not first or options.emit_existing):
            self.event(JobEventKind.CREATED, job)
        if followed and not first and job.is_final:
            self.event(JobEventKind.FINISHED, job)
        return followed

    def changed(self, job: BatchJob, old: BatchJob, options: _Options) -> bool:
        """A followed job that changed: whether it is still followed."""
        if old.status != job.status:
            self.event(JobEventKind.STATUS_CHANGED, job, old)
            if job.is_final and not old.is_final:
                self.event(JobEventKind.FINISHED, job, old)
        elif _counts(old) != _counts(job):
            self.event(JobEventKind.PROGRESS, job, old)
        return not (options.only_unfinished and job.is_final)  # no deleted later

    def went(self, old: BatchJob) -> None:
        state, job_id = self.state, old.job_id
        if job_id not in state.dropped:
            self.event(JobEventKind.DELETED, old)
        for dropped in state.remove(job_id):
            self.upsert.pop(dropped, None)
            self.delete.append(dropped)
        self.upsert[job_id] = _encode_gone(state.gone[job_id])

    def changes(self, scope: bytes) -> ProjectChanges:
        return ProjectChanges(
            self.project_id,
            self.upsert,
            self.delete,
            [_encode_event(e) for e in self.events],
            scope=scope,
            replace=self.state.fresh,
        )


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
    diff = _Diff(project_id, state, observed_at)
    first = not state.listed
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
            followed = diff.appeared(job, options, first=first)
        elif followed:
            followed = diff.changed(job, old, options)
        state.put(job, followed=followed)
        diff.upsert[job_id] = _encode_known(
            job, followed=followed, occurrence=state.occurrence.get(job_id, 0)
        )
    gone = sorted(
        (state.jobs[job_id] for job_id, job in seen.items() if job is None),
        key=lambda j: (j.created_at, j.job_id),
    )
    for old in gone:
        diff.went(old)
    state.listed = True
    changes = diff.changes(options.scope)
    state.fresh = False
    return diff.events, changes


class _HeadReads:
    """
    One poll's reads of a listing's head, newest first, and whether records
    moved under them (then the poll re-lists the project whole).

    A read after one of two records or more starts at that read's last record,
    and the listing's `Boundary` checks the two reads against each other: the
    last record must be there (a deletion balanced by a creation leaves the
    count as it was), and jobs of one created_at that straddle the boundary
    must have kept their places (they may swap between the reads and one slip
    past, `_tie_kept`). ``job_count`` must not move between the reads either.
    """

    __slots__ = ("boundary", "count", "keep", "last_read", "offset")

    def __init__(self, keep: int) -> None:
        self.keep = keep  # records the boundary tells its known ids by
        self.boundary: Boundary | None = None  # None: the next read is not checked
        self.last_read: tuple[BatchJob, ...] = ()
        self.offset = 0  # where the next read starts
        self.count = -1  # job_count, as the first read told it

    def moved(self, page: JobPage, jobs: tuple[BatchJob, ...]) -> bool:
        """Whether records moved between the last read and this one, *jobs*."""
        if self.count == -1:
            self.count = page.job_count
        elif page.job_count != self.count:
            return True  # jobs came or went while the poll read
        boundary = self.boundary
        if boundary is None:
            return False
        last = self.last_read[-1].job_id
        # no record was read past the last one: this read shows what follows it
        past = jobs[1] if len(jobs) > 1 and jobs[0].job_id == last else None
        boundary.note_past(self.last_read, past)
        fresh = boundary.check(jobs)
        if fresh is None or boundary.last_index is None:
            return True
        tie = boundary.split_tie
        return tie is not None and not _tie_kept(jobs, fresh, boundary.last_index, tie)

    def read(self, jobs: tuple[BatchJob, ...]) -> None:
        """Note *jobs*, just read: where the next read starts and what it checks."""
        self.offset += read_stride(len(jobs))
        if len(jobs) < 2:  # noqa: PLR2004 (one record cannot start a read early)
            self.boundary = None
            return
        if self.boundary is None:
            self.boundary = Boundary(self.keep)
            self.boundary.last = jobs[-1]
        self.boundary.yielded(jobs)
        self.last_read = jobs


def _tie_kept(
    jobs: tuple[BatchJob, ...], fresh: Fresh, last_index: int, tie: datetime
) -> bool:
    """
    Whether the jobs created at *tie*, which the boundary before *jobs*
    splits, kept their places between the two reads: *jobs* starts with the
    last record read, brings only records not read before after it, and ends
    past the tie. A job that slipped before the boundary pushes one read
    before past it, where *jobs* would hold it; so a tie costs nothing more
    unless it moved.
    """
    return (
        last_index == 0 and len(fresh) == len(jobs) - 1 and jobs[-1].created_at != tie
    )


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
            cost = reads_down_to(state.rank(job) + 1, self.page_size)
            cost += len(followed) - read
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
        # never dearer than a re-list
        budget = reads_down_to(len(state.jobs) + 1, size) + 2
        seen: dict[str, BatchJob | None] = {}
        head = _HeadReads(_KEPT_PAGES * size)
        met_known, at_end, oldest = False, False, None
        while True:
            budget -= 1
            if budget < 0:
                return None
            offset = head.offset
            page = await self.read_page(project_id, offset, limit)
            jobs = page.jobs[:limit]
            if head.moved(page, jobs):
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
            head.read(jobs)
            limit = size
        count = head.count
        covered = state.jobs if at_end or oldest is None else state.newer_than(oldest)
        return await self.settle(project_id, state, seen, covered, count)

    async def settle(
        self,
        project_id: str,
        state: _Project,
        seen: dict[str, BatchJob | None],
        covered: Iterable[str],
        count: int,
    ) -> dict[str, BatchJob | None] | None:
        """
        What the reads saw, with the known jobs of the range they *covered*
        and not seen marked gone and the stragglers shown; None when the
        count says a job the poll did not see went (re-list whole).
        """
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


# -- argument checks: the shared contract of ._checks, and the watch's own --

_INTERVAL_MIN: Final = 0.1  # faster polling only spends the gateway's quota
_SECONDS_MAX: Final = 86_400.0  # a day: longer is a mistake, not a poll


def _check_checkpoint(value: object) -> None:
    if value is None:
        return
    if isinstance(value, str | os.PathLike):
        msg = (
            f"checkpoint must be a Checkpoint, not the path {str(value)!r}: "
            "use checkpoint=SqliteCheckpoint(path)"
        )
        raise TypeError(msg)
    _check_methods(
        "checkpoint",
        value,
        ("claim", "renew", "location", "load", "save", "mark_taken", "aclose"),
        "a Checkpoint (SqliteCheckpoint, RedisCheckpoint)",
    )


def _check_methods(name: str, value: object, methods: Sequence[str], what: str) -> None:
    """*value* has each of *methods* (a protocol a user may implement)."""
    if value is None:
        return
    missing = [m for m in methods if not callable(getattr(value, m, None))]
    if missing:
        msg = (
            f"{name} must be {what}, not {type(value).__name__}: "
            f"it has no {', '.join(missing)}"
        )
        raise TypeError(msg)


def _check_shard(shard: object) -> None:
    match shard:
        case None:
            pass
        case (int() as index, int() as count) if (
            not isinstance(index, bool)
            and not isinstance(count, bool)
            and 0 <= index < count
        ):
            pass
        case _:
            msg = f"shard must be (index, count) with 0 <= index < count, not {shard!r}"
            raise ValueError(msg)


@attrs.frozen(kw_only=True)
class _Settings:
    """How a watch runs, its arguments checked: what `_watch` needs besides ids."""

    interval: float
    report_after: int
    reconcile_every: int
    concurrency: int
    checkpoint: Checkpoint | None
    sink: Sink | None
    reset_state: bool
    lease_ttl: float
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    observer: WatchObserver


def _lease_ttl(lease_ttl: object, interval: float) -> float:
    if lease_ttl is None:  # a few polls: one slow poll does not lose the lease
        return max(3 * interval, 10.0)
    ttl = check_seconds(
        "lease_ttl", lease_ttl, minimum=_INTERVAL_MIN, maximum=_SECONDS_MAX
    )
    if ttl <= interval:
        msg = f"lease_ttl must be longer than interval ({interval:g} s), not {ttl:g}"
        raise ValueError(msg)
    return ttl


def _scope_of(scope: Mapping[str, object] | None, *, only_unfinished: bool) -> bytes:
    return orjson.dumps(
        {**(scope or {}), "only_unfinished": only_unfinished},
        option=orjson.OPT_SORT_KEYS,
    )


def _report_round(
    observer: WatchObserver,
    results: Mapping[str, tuple[list[JobEvent], ProjectChanges] | IefError],
    batches: Iterable[_Batch],
) -> None:
    """Tell *observer* how the round went, before its events are yielded."""
    failures: dict[str, Exception] = {
        pid: r for pid, r in results.items() if isinstance(r, IefError)
    }
    kinds = Counter(event.kind.value for batch in batches for event in batch.events)
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
    sink: Sink | None = None,
    shard: tuple[int, int] | None = None,
    scope: Mapping[str, object] | None = None,
    reset_state: bool = False,
    lease_ttl: float | None = None,
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
    as the module describes. With *sink*, each poll's job events are written
    to it (with the state, in one transaction where it shares the
    checkpoint's store) before they are yielded. *scope* (endpoint, instance,
    job type) is what the checkpoint records with *only_unfinished*: a state
    kept for another scope is refused (`StateError`) unless *reset_state*,
    which starts it over.
    *lease_ttl* is how long the checkpoint's ownership lasts without a poll
    (by default three intervals, at least 10 s). *observer* hears of each
    poll round (telemetry and health). *clock* (Unix seconds) and *sleep* are
    for tests.

    Raises:
        TypeError: An argument of the wrong type (a path as *checkpoint*: use
            `SqliteCheckpoint`).
        ValueError: No project, an *interval* under 0.1 s or over a day, a bad
            *shard*, bound or *lease_ttl*.
    """
    ids = list(dict.fromkeys(project_ids))
    if not ids:
        msg = "no project to watch: give at least one project id"
        raise ValueError(msg)
    seconds = check_seconds(
        "interval", interval, minimum=_INTERVAL_MIN, maximum=_SECONDS_MAX
    )
    for name, flag in (
        ("emit_existing", emit_existing),
        ("only_unfinished", only_unfinished),
        ("skip_idle", skip_idle),
        ("reset_state", reset_state),
    ):
        check_flag(name, flag)
    for name, value in (
        ("report_after", report_after),
        ("reconcile_every", reconcile_every),
        ("page_size", page_size),
        ("concurrency", concurrency),
    ):
        check_int(name, value, minimum=1)
    _check_checkpoint(checkpoint)
    _check_methods("sink", sink, ("write", "commit"), "a Sink (RedisStreamSink)")
    if sink is not None and checkpoint is None:
        # without a state each start is a silent baseline: what changed while
        # the watch was down would never reach the sink
        msg = "a sink needs a checkpoint: pass checkpoint= with sink="
        raise ValueError(msg)
    _check_shard(shard)
    if shard is not None:
        ids = [pid for pid in ids if shard_of(pid, shard[1]) == shard[0]]
    reader = _Reader(read_page, list_project, show_job, page_size, skip_idle)
    options = _Options(
        emit_existing=emit_existing,
        only_unfinished=only_unfinished,
        scope=_scope_of(scope, only_unfinished=only_unfinished),
    )
    settings = _Settings(
        interval=seconds,
        report_after=report_after,
        reconcile_every=reconcile_every,
        concurrency=concurrency,
        checkpoint=checkpoint,
        sink=sink,
        reset_state=reset_state,
        lease_ttl=_lease_ttl(lease_ttl, seconds),
        clock=clock,
        sleep=sleep,
        observer=NO_OBSERVER if observer is None else observer,
    )
    return _watch(_Run(ids, reader, options, settings))


@attrs.frozen
class _Batch:
    """Events to deliver for one project; *first* numbers them for the state
    (None: not the state's, as ``project_failed`` is not)."""

    project_id: str
    events: Sequence[JobEvent]
    first: int | None = 0

    def numbered(self) -> Iterable[tuple[int | None, JobEvent]]:
        if self.first is None:
            return ((None, event) for event in self.events)
        return enumerate(self.events, start=self.first + 1)


class _Hand:
    """The event the consumer holds, marked taken when it asks for the next."""

    __slots__ = ("checkpoint", "held")

    def __init__(self, checkpoint: Checkpoint | None) -> None:
        self.checkpoint = checkpoint
        self.held: tuple[str, int] | None = None

    def hold(self, project_id: str, number: int | None) -> None:
        self.held = None if number is None else (project_id, number)

    def keep(self) -> None:
        """The consumer failed with the event: it comes again after a restart."""
        self.held = None

    async def take(self) -> None:
        held = self.held
        if held is not None and self.checkpoint is not None:
            try:
                await self.checkpoint.mark_taken(*held)
            except asyncio.CancelledError:
                raise  # still held: the clean stop that follows takes it
            except BaseException:
                self.held = None  # the store failed: do not try again on the way out
                raise
        self.held = None


def _fails_for_good(error: IefError) -> bool:
    """401/403/404 (and IEF.011005): no later poll can work without a fix."""
    return isinstance(error, AuthenticationError | NotFoundError)


class _Run:
    """One watch's projects, polls and state; `_watch` delivers what it finds."""

    def __init__(
        self, ids: list[str], reader: _Reader, options: _Options, settings: _Settings
    ) -> None:
        self.ids = ids
        self.reader = reader
        self.options = options
        self.settings = settings
        self.states: dict[str, _Project] = {}
        # staggered: each project's safety re-list falls in a poll of its own
        self.phase = {pid: shard_of(pid, settings.reconcile_every) for pid in ids}
        self.polls = 0
        self.started: float | None = None
        self.results: dict[str, tuple[list[JobEvent], ProjectChanges] | IefError] = {}

    async def each(self, work: Callable[[str], Awaitable[None]]) -> None:
        # at most *concurrency* projects at once, not one task per project
        todo = iter(self.ids)

        async def worker() -> None:
            for project_id in todo:
                await work(project_id)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.settings.concurrency, len(self.ids))):
                    group.create_task(worker())
        except ExceptionGroup as failed:
            # one worker's error (a checkpoint that fails, a bug) stopped them
            # all: raise it as it came, not wrapped in a group
            raise failed.exceptions[0]  # noqa: B904 (its own traceback says where)

    async def start(self) -> list[_Batch]:
        """Claim and load the state; what a cut-off poll had not delivered."""
        checkpoint = self.settings.checkpoint
        if checkpoint is not None:
            await checkpoint.claim(self.ids, ttl=self.settings.lease_ttl)
        await self.each(self.load)
        batches = []
        for project_id in self.ids:
            state = self.states[project_id]
            if state.taken < len(state.pending):
                rest = state.pending[state.taken :]
                batches.append(_Batch(project_id, rest, state.taken))
            state.pending = []
        if self.settings.sink is not None:  # cut off before they reached it
            await self.hand_over(batches)
            return [_Batch(b.project_id, b.events, None) for b in batches]
        return batches

    async def hand_over(self, batches: Sequence[_Batch]) -> None:
        """Write tracked events to the sink, then mark them taken."""
        sink, checkpoint = self.settings.sink, self.settings.checkpoint
        assert sink is not None  # noqa: S101 (only called with one)
        assert checkpoint is not None  # noqa: S101 (watch() refuses a sink without)
        written = [batch for batch in batches if batch.first is not None]
        await sink.write([event for batch in written for event in batch.events])
        for batch in written:
            taken = (batch.first or 0) + len(batch.events)
            await checkpoint.mark_taken(batch.project_id, taken)

    async def commit(
        self, changes: list[ProjectChanges], batches: list[_Batch]
    ) -> list[_Batch]:
        """Save the poll, and write its events to the sink: what to yield."""
        sink, checkpoint = self.settings.sink, self.settings.checkpoint
        if sink is None:
            if checkpoint is not None and changes:
                await checkpoint.save(changes)
            return batches
        events = [
            e for batch in batches if batch.first is not None for e in batch.events
        ]
        delivered = [attrs.evolve(change, pending=()) for change in changes]
        assert checkpoint is not None  # noqa: S101 (watch() refuses a sink without)
        if changes and not await sink.commit(events, checkpoint, delivered):
            await checkpoint.save(changes)
            await self.hand_over(batches)
        # in the sink already: yielding them takes nothing
        return [_Batch(batch.project_id, batch.events, None) for batch in batches]

    async def load(self, project_id: str) -> None:
        checkpoint = self.settings.checkpoint
        saved = None if checkpoint is None else await checkpoint.load(project_id)
        if checkpoint is None or saved is None or self.settings.reset_state:
            self.states[project_id] = _Project()
            return
        where = checkpoint.location(project_id)
        if saved.scope:
            _same_scope(where, project_id, saved.scope, self.options.scope)
        self.states[project_id] = _Project.restore(project_id, saved, where)

    async def poll(self) -> list[_Batch]:
        """One poll of every project: saved, then what to deliver."""
        settings = self.settings
        if self.started is not None:
            pause = self.started + settings.interval - settings.clock()
            await settings.sleep(max(0.0, pause))
        self.started = settings.clock()
        self.polls += 1
        self.results.clear()
        checkpoint = settings.checkpoint
        if checkpoint is not None:
            await checkpoint.renew()  # a lost lease stops the watch before it reads
        with settings.observer.poll_round(len(self.ids)):  # no yield inside
            await self.each(self.poll_one)
        try:
            batches = await self.settle()
        except BaseException as exc:  # the watch ends here: so does its round
            settings.observer.round_failed(exc)
            raise
        _report_round(settings.observer, self.results, batches)
        return batches

    async def settle(self) -> list[_Batch]:
        """The poll's outcome saved (and written to the sink): what to deliver."""
        changes = [
            result[1]
            for pid in self.ids
            if not isinstance(result := self.results[pid], IefError)
            and (result[0] or result[1].upsert or result[1].delete or result[1].replace)
        ]
        batches = [batch for pid in self.ids if (batch := self.outcome(pid))]
        saving = changes and self.settings.checkpoint is not None
        with self.settings.observer.checkpoint_write() if saving else nullcontext():
            return await self.commit(changes, batches)

    def hopeless(self) -> IefError | None:
        """
        The first error when every project failed for good on its first poll
        (a wrong token, wrong endpoint): no later poll can work.
        """
        errors = [self.results.get(pid) for pid in self.ids]
        if (
            self.ids
            and self.polls == 1
            and all(
                isinstance(error, IefError) and _fails_for_good(error)
                for error in errors
            )
        ):
            return errors[0] if isinstance(errors[0], IefError) else None
        return None

    async def poll_one(self, project_id: str) -> None:
        state, reader = self.states[project_id], self.reader
        phase = (self.polls + self.phase[project_id]) % self.settings.reconcile_every
        try:
            seen = None
            if state.listed and phase:
                seen = await reader.incremental(project_id, state)
            if seen is None:
                seen = await reader.full(project_id, state)
        except IefError as exc:  # reported as an event, never the end of the watch
            self.results[project_id] = exc
            return
        observed_at = datetime.fromtimestamp(self.settings.clock(), UTC)
        self.results[project_id] = _diff(
            project_id, state, seen, observed_at, self.options
        )

    def outcome(self, project_id: str) -> _Batch | None:
        result, state = self.results[project_id], self.states[project_id]
        if not isinstance(result, IefError):
            state.failures, state.worked = 0, True
            return _Batch(project_id, result[0]) if result[0] else None
        state.failures += 1
        at_once = not state.worked and state.failures == 1 and _fails_for_good(result)
        if not at_once and state.failures % self.settings.report_after:
            return None
        failed = JobEvent(
            kind=JobEventKind.PROJECT_FAILED,
            project_id=project_id,
            job=None,
            observed_at=datetime.fromtimestamp(self.settings.clock(), UTC),
            error=result,
            failures=state.failures,
        )
        return _Batch(project_id, [failed], None)


def _same_scope(where: str, project_id: str, saved: bytes, ours: bytes) -> None:
    """Refuse a state kept for other settings: its changes would all be false."""
    if saved == ours:
        return
    try:
        theirs = orjson.loads(saved)
        mine = orjson.loads(ours)
        differing = next(
            key for key in sorted({*theirs, *mine}) if theirs.get(key) != mine.get(key)
        )
    except (ValueError, AttributeError, StopIteration):
        msg = f"{where}: project {project_id}: its scope record is damaged"
        raise StateError(reason=msg, project_id=project_id) from None
    msg = (
        f"{where}: project {project_id} was watched with {differing}="
        f"{theirs.get(differing)!r}, this watch has {mine.get(differing)!r}; "
        "reset the state to start over (--reset-state, or reset_state=True)"
    )
    raise StateError(reason=msg, project_id=project_id)


async def _watch(run: _Run) -> AsyncGenerator[JobEvent, None]:
    """
    Deliver what *run* finds, and mark each event taken when the consumer asks
    for the next one or stops cleanly (``aclose()``, cancellation); an
    exception thrown in (`Stream` throws the one leaving ``async with``)
    keeps it for redelivery.
    """
    hand = _Hand(run.settings.checkpoint)
    try:
        batches = await run.start()
        while True:
            for batch in batches:
                for number, event in batch.numbered():
                    hand.hold(batch.project_id, number)
                    try:
                        yield event
                    except Exception:
                        hand.keep()  # the consumer failed with it: redeliver
                        raise
                    await hand.take()
            if (error := run.hopeless()) is not None:
                raise error  # after each project's project_failed
            batches = await run.poll()
    finally:
        # a clean stop (aclose, cancellation): the event in hand counts as taken
        await hand.take()
