"""
The page walk for one project, as a function of a ``fetch_page(offset, limit)``
callable: no HTTP here, so property tests drive it with a fake server.

The walk:

* asks for the first page, learns ``job_count`` (and the server's real page size,
  if it caps ``limit``), then keeps up to *window* later pages in flight while
  yielding pages strictly in order;
* asks each later page from one record before its start and one record past
  its end (a ``limit`` two larger, never an extra request; IEF refuses a
  ``limit`` over 1000, so a ``page_size`` of 999 peeks past none, and one of
  1000 or more overlaps within its own records instead) and checks that its
  first record is the last one yielded, by ``job_id``, and that neither read
  shows the jobs sharing that record's ``created_at`` go on across the
  boundary (the record peeked past the earlier page, the second record of the
  later one). When that
  holds, every job that existed between the two reads is in one of the two
  pages: nothing was skipped, and no record is looked at one by one;
* when it does not hold (jobs were created or deleted, or jobs with equal
  ``created_at`` swapped places), tells what was yielded already by ``job_id``
  (from then on it keeps every id it yields) and yields the rest; a page that
  shares no record with what was yielded means records moved past the
  boundary, so it re-reads from the last record yielded until it finds it
  again (``created_at`` only hints which way to look), a bounded number of
  requests, else `ListingMovedError`. Jobs sharing the ``created_at`` a
  boundary splits (or may split, where no record past a page was read once
  jobs came and went, but for a capped server) are read again, unless the
  later page holds them all with a record on each side, until one read does:
  their order may change on every read (a server ordering by a
  ``created_at`` of whole seconds and nothing else), so only
  such a read shows every one. Neither ``job_count`` nor the sort order
  decides what is a duplicate: records are yielded in the order the server
  sent them, whatever ``sort`` was asked, and none is dropped for where it
  arrived;
* advances by what the pages hold, never ``offset + limit``, and fills in any
  short page instead of skipping past it;
* ends at ``job_count`` (the peek past the last page shows a count that is
  stale), or, once a page holds records past ``job_count``, at the first
  short page (`JobCountStale`);
* with *max_items*, shrinks the last request so it fetches no record it will not
  yield (but the one it overlaps); never asks for a page past the end.

So a job that exists for the whole walk is yielded exactly once, whatever jobs
come and go meanwhile and however jobs of equal ``created_at`` swap places
between reads, and a job created or deleted meanwhile at most once. Nothing of
this costs a request when nothing changes (but the one re-read of jobs sharing
a ``created_at`` that a boundary splits). Where that cannot hold, the walk
says so with `ListingMovedError` rather than a short listing: records that
move further than a page between two reads (a server capping pages at a few
records under heavy churn). The limits that remain:

* where no record past a page is read (a ``page_size`` of 999 or more, a
  walk with *max_items*), a boundary that splits jobs sharing a
  ``created_at`` shows only once jobs came and went visibly (``job_count``
  changed, or a page did not begin with the last record); before that, as
  many creations as deletions with such jobs swapping places can still hide
  one. Against a server that caps ``limit`` below what was asked, only a
  split that a page shows is read again (reading every boundary again would
  double requests that already move little): such jobs swapping places on
  every read while jobs come and go can still hide one there;
* more jobs sharing one ``created_at`` than a page holds (``page_size`` - 1),
  whose order changes on every read, cannot all be shown by one read, so one
  of them can hide while jobs come and go;
* a server that serves one or two records a request (or a ``page_size`` of
  1) leaves no room for a record on each side of a boundary, so jobs sharing
  a ``created_at`` are not read again. With one record a request the walk
  reads one request at a time and ends in `ListingMovedError` as soon as
  ``job_count`` falls (jobs were deleted); deletions balanced by as many
  creations leave the count and every read alike and cannot be told, so a
  record can then be skipped (duplicates are still told by ``job_id``).

A changed or stale ``job_count`` is reported once per listing, as a warning
whose text never varies (so the usual once-per-place filter keeps stderr quiet)
and, with the project, offset and counts, on the ``ief_jobs`` logger at INFO.
"""

from __future__ import annotations

import asyncio
import logging
import math
import operator
import warnings
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from datetime import datetime
from typing import Final

import attrs

from .errors import IefError, ListingMovedError
from .models import BatchJob, JobPage, ListQuery, Progress

__all__ = [
    "FetchPage",
    "JobCountChanged",
    "JobCountStale",
    "ListingMovedError",
    "walk_pages",
]

FetchPage = Callable[[int, int], Awaitable[JobPage]]
"""``fetch_page(offset, limit) -> JobPage``: one request of the listing."""

_LIMIT_MAX: Final = 1000  # IEF's list calls refuse a larger limit (IEF.100005)
_KEPT_PAGES: Final = 4  # pages of ids a walk tells duplicates by: more than moves
_MISSES_MAX: Final = 16  # reads in a row that find no known record: 2**16 back
_MEND_LEAST: Final = 3  # records a read needs to hold a job and one on each side
_MEND_READS: Final = 32  # reads that look for all of a tie's jobs at once
_log: Final = logging.getLogger("ief_jobs")
_job_id: Final = operator.attrgetter("job_id")  # a loop in C, not in Python


class JobCountChanged(UserWarning):
    """``job_count`` changed during a walk: jobs were created or deleted meanwhile."""


class JobCountStale(JobCountChanged):
    """
    A page held records past the ``job_count`` it reported: the count is stale.

    The walk then follows the records to the first short page instead.
    """


class _Chain:
    """
    The records a walk yielded last, to tell the next page's new ones from them.

    *last* is the record the next page must start with. While *sure*, no job
    yielded sorts after it, so a page that starts with it holds only new jobs.
    """

    __slots__ = (
        "_ids",
        "_kept",
        "_pages",
        "ahead",
        "keep",
        "last",
        "moved",
        "shifted",
        "sure",
        "tied",
        "tracking",
    )

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.last: BatchJob | None = None
        self.sure = True
        self.moved: int | None = None  # where the last page held *last*, if it did
        self.tied: datetime | None = None  # a created_at the last boundary split
        # the record past *last*, when last read, shares its created_at (or was
        # not seen once jobs came and went): the boundary may split a tie
        self.ahead = False
        self.shifted = False  # a page did not begin with the last record
        self._pages: deque[tuple[BatchJob, ...]] = deque()
        self._kept = 0
        self._ids: set[str] | None = None  # built only when a page does not line up
        # Once a page did not line up, every id yielded from then on is kept:
        # records may come back from anywhere, and each is checked by its id.
        self.tracking = False

    def remember(self, jobs: tuple[BatchJob, ...]) -> None:
        """Hold *jobs*, just yielded, and forget the oldest beyond *keep*."""
        self._pages.append(jobs)
        self._kept += len(jobs)
        while self._kept - len(self._pages[0]) >= self.keep:
            self._kept -= len(self._pages.popleft())
        if self.tracking and self._ids is not None:
            self._ids.update(map(_job_id, jobs))
        else:
            self._ids = None

    def link(self, jobs: tuple[BatchJob, ...]) -> range | list[int] | None:
        """
        The indexes of *jobs* not yielded yet, or None if *jobs* shares no record
        with what was yielded last (records moved past the boundary).
        """
        last = self.last
        if (
            self.sure
            and not self.tracking
            and last is not None
            and jobs
            and jobs[0].job_id == last.job_id
            # a tie at the boundary may have swapped places: look closer
            and not self.ahead
            and (len(jobs) == 1 or jobs[1].created_at != last.created_at)
        ):
            self.moved, self.tied = 0, None
            self.follow(jobs)
            return range(1, len(jobs))
        ids = self.ids()
        self.tracking = True
        if last is not None and (not jobs or jobs[0].job_id != last.job_id):
            self.shifted = True
        found = [i for i, job in enumerate(jobs) if job.job_id in ids]
        if not found:
            return None
        # before the first known record only its ties can be new and not
        # created meanwhile: jobs with equal created_at may swap places
        tie = jobs[found[0]].created_at
        fresh = [
            i
            for i, job in enumerate(jobs)
            if job.job_id not in ids and (i > found[0] or job.created_at == tie)
        ]
        # Sure again only if the last record is here with new records after it
        # and nothing yielded. If it is gone, what is new here may sort before
        # jobs yielded already (a server whose order puts new jobs among old
        # ones), so the next page is checked record by record too.
        self.moved = None
        if last is not None:
            self.moved = next((i for i in found if jobs[i].job_id == last.job_id), None)
        self.sure = self.moved is not None and (
            self.moved == found[-1] and (self.sure or self.moved < len(jobs) - 1)
        )
        # jobs sharing the last one's created_at on both sides of the boundary
        # may have swapped places between the reads: some may hide behind it
        self.tied = None
        if last is not None:
            key = last.created_at
            ties = [i for i, job in enumerate(jobs) if job.created_at == key]
            # unless this read holds all of them, a record on each side
            whole = bool(ties) and ties[0] > 0 and ties[-1] < len(jobs) - 1
            if not whole and (self.ahead or len(ties) > 1):
                self.tied = key
        self.follow(jobs)
        return fresh

    def follow(self, jobs: tuple[BatchJob, ...]) -> None:
        """Make the last of *jobs* the record the next page must start with."""
        self.last = jobs[-1]

    def ties(self, key: datetime) -> int:
        """How many of the jobs yielded lately share *key* as created_at."""
        return sum(job.created_at == key for page in self._pages for job in page)

    def ids(self) -> set[str]:
        """The ids of the jobs yielded lately (or since tracking began)."""
        if self._ids is None:
            self._ids = {job.job_id for page in self._pages for job in page}
        return self._ids

    def remembers(self, count: int) -> bool:
        """Whether the last *count* jobs yielded are all still known."""
        return count <= max(self._kept, len(self.ids()))

    def anew(self, jobs: tuple[BatchJob, ...]) -> list[int]:
        """The indexes of *jobs* not yielded, from a walk that starts over."""
        ids = self.ids()
        self.sure, self.moved, self.tied = False, None, None
        self.follow(jobs)
        return [i for i, job in enumerate(jobs) if job.job_id not in ids]

    def mend(self, jobs: tuple[BatchJob, ...], key: datetime) -> list[int]:
        """The indexes of *jobs* created at *key* and not yielded yet."""
        ids = self.ids()
        return [
            i
            for i, job in enumerate(jobs)
            if job.created_at == key and job.job_id not in ids
        ]


def _distinct(jobs: tuple[BatchJob, ...]) -> tuple[BatchJob, ...]:
    """*jobs* without the ones a page repeats (a server that sends one twice)."""
    first: dict[str, BatchJob] = {}
    for job in jobs:
        first.setdefault(job.job_id, job)
    return tuple(first.values())


class _Walk:
    """One listing's state, shared by its main loop and its re-reads."""

    __slots__ = (
        "ask",
        "chain",
        "churned",
        "count",
        "delivered",
        "fetch_page",
        "first",
        "follow",
        "lag",
        "on_progress",
        "overlap",
        "project_id",
        "reported",
        "resume",
        "tally",
        "want",
        "widest",
    )

    def __init__(
        self,
        fetch_page: FetchPage,
        query: ListQuery,
        project_id: str,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.fetch_page = fetch_page
        self.project_id = project_id
        self.on_progress = on_progress
        self.first = query.offset
        self.want = math.inf if query.max_items is None else query.max_items
        self.delivered = 0
        self.resume = query.offset  # where the pages yielded so far end
        self.count = -1  # job_count as the latest page told it
        self.follow = False  # job_count is stale: the records tell the end
        self.churned = False  # job_count changed: jobs came or went
        # job_count as the last of the one-record pages read one after another
        self.tally = -1
        self.reported: set[type[Warning]] = set()  # once per listing
        # later pages start one record early; IEF refuses a limit over 1000,
        # so a page_size of 1000 or more takes its overlap from its own records
        size = query.page_size
        self.ask = size + 1 if size < _LIMIT_MAX else size
        self.overlap = 1
        self.widest = 0  # the most records one page held
        self.lag = 0  # how far records had moved back when a re-read found them
        self.chain = _Chain(_KEPT_PAGES * self.ask)

    @property
    def stride(self) -> int:
        """New records a full later page brings."""
        return self.ask - self.overlap

    async def settle(
        self, answer: Awaitable[JobPage], limit: int, serial: bool = False
    ) -> JobPage:
        try:
            page = await answer
        except IefError as exc:
            exc.offset = self.resume  # not where the request began: one earlier
            raise
        jobs = page.jobs
        if len(jobs) > limit:
            jobs = jobs[:limit]  # no more room than asked for
            page = attrs.evolve(page, jobs=jobs)
        n = len(jobs)
        if len(set(map(_job_id, jobs))) < n:
            page = attrs.evolve(page, jobs=_distinct(jobs))
            n = len(page.jobs)
        self.widest = max(self.widest, n)
        if serial and 0 <= page.job_count < self.tally:
            # one record a page leaves no overlap to check: a deletion may
            # have moved the next record onto the one read, unseen
            raise ListingMovedError(
                reason="jobs were deleted while listing a server that serves one "
                "record a page, so a record may have been skipped",
                project_id=self.project_id,
                offset=self.resume,
            )
        if serial:
            self.tally = page.job_count
        if page.job_count != self.count and self.count >= 0:
            self.churned = True
            self.report(
                JobCountChanged,
                "job_count changed while listing: jobs were created or deleted "
                "meanwhile",
                "job_count of project %s changed from %d to %d at offset %d",
                self.count,
                page.job_count,
                page.offset,
            )
        self.count = page.job_count
        if n and not self.follow and page.offset + n > page.job_count:
            self.follow = True
            self.report(
                JobCountStale,
                "job_count is lower than the records: following the records "
                "to the first short page",
                "job_count of project %s is %d but a page at offset %d holds "
                "%d records",
                page.job_count,
                page.offset,
                n,
            )
        return page

    def report(
        self, category: type[Warning], text: str, detail: str, *args: int
    ) -> None:
        """Warn once per listing with a fixed *text*; log the *detail*."""
        if category in self.reported:
            return
        self.reported.add(category)
        warnings.warn(text, category, stacklevel=4)
        _log.info(detail, self.project_id, *args)

    def ends(self, page: JobPage, asked: int) -> bool:
        """
        Whether *page*, asked for *asked* records, is the last one.

        A short page that ``job_count`` says is not the last was capped by the
        server: later requests ask for what it gave.
        """
        n = len(page.jobs)
        if n >= asked:
            return not self.follow and page.offset + n >= page.job_count
        if self.follow or page.offset + n >= page.job_count or n == 0:
            return True
        if n <= self.overlap:
            if self.widest > 1:
                return True  # nothing new where the count says more: stale
            # one record a page leaves no room to overlap: read one at a time
            self.overlap = 0
        self.ask = min(self.ask, n)
        return False

    def deliver(self, page: JobPage, picks: range | list[int]) -> JobPage | None:
        """The page of *picks* to yield, at most what is still wanted."""
        room = self.want - self.delivered
        if isinstance(picks, range):
            end = picks.stop if room >= len(picks) else picks.start + int(room)
            jobs = page.jobs[picks.start : end]
        else:
            chosen = picks[: int(min(len(picks), room))]
            jobs = tuple(page.jobs[i] for i in chosen)
            end = chosen[-1] + 1 if chosen else 0
        if not jobs:
            return None
        self.delivered += len(jobs)
        # the page's records before *end* were yielded before or are not ours:
        # next_offset stays the exact position to resume from
        self.resume = page.offset + end
        self.chain.remember(jobs)
        self.progress(page)
        return JobPage(
            project_id=page.project_id,
            offset=self.resume - len(jobs),
            job_count=page.job_count,
            jobs=jobs,
            request_id=page.request_id,
        )

    def progress(self, page: JobPage) -> None:
        if self.on_progress is not None:
            total = max(page.job_count - self.first, self.delivered)
            target = int(min(total, self.want))
            self.on_progress(
                Progress(self.project_id, page.job_count, self.delivered, target)
            )

    def split(self, page: JobPage) -> int | None:
        """
        Where to read again the jobs sharing the created_at that the boundary
        before *page* split, if it split one: their order may change between
        reads, so only one read holding them all shows every one.
        """
        chain = self.chain
        if chain.tied is None:
            return None
        # where the jobs yielded at that created_at began, when last read
        return max(self.first, page.offset - chain.ties(chain.tied))

    def beyond(self, jobs: tuple[BatchJob, ...], past: BatchJob | None) -> None:
        """
        Note whether the boundary after *jobs* (just read) may split a tie:
        *past*, the record read after them, shares the last one's created_at;
        or it was not read, and jobs came and went (when nothing changed, a
        tie split there shows on the next page).
        """
        if past is not None:
            self.chain.ahead = past.created_at == jobs[-1].created_at
        else:
            # a capped server's pages are too few records to read ties again
            # at every boundary under churn: there, only a tie a page shows
            capped = self.ask < self.chain.keep // _KEPT_PAGES
            self.chain.ahead = not capped and (self.churned or self.chain.shifted)

    async def mend(self, at: int, key: datetime) -> JobPage | None:
        """
        Read from about *at* the jobs created at *key* that no read showed yet,
        until one read holds all of them with a record on each side (or the
        list's end): their order may change on every read, so only such a read
        shows every one. Bounded: records that move too far between the reads
        end in `ListingMovedError`.
        """
        chain, resume = self.chain, self.resume
        last, sure = chain.last, chain.sure
        if self.ask < _MEND_LEAST:
            chain.tied = None
            return None  # no read holds a job with a record on each side
        found: dict[str, BatchJob] = {}
        page: JobPage | None = None
        # reads that held none of them: the last before them, the first past
        below: int | None = None
        above: int | None = None
        misses = 0
        for _ in range(_MEND_READS):
            page = await self.settle(self.fetch_page(at, self.ask), self.ask)
            jobs = page.jobs
            for i in chain.mend(jobs, key):
                found.setdefault(jobs[i].job_id, jobs[i])
            ties = [i for i, job in enumerate(jobs) if job.created_at == key]
            if not ties:
                # a read of one record or none is at the list's end: look back
                side = _side(jobs, key) if len(jobs) > 1 else -1
                if side == 0:
                    break  # none of them left, or an order not by created_at
                # look further on when the read sorts before them, else back,
                # further each time (they may be moving away); once both ends
                # are known, halfway between them
                if side > 0:
                    below = at + len(jobs) - 1
                else:
                    above = at
                if below is not None and above is not None and above <= below + 1:
                    below = above = None  # moved meanwhile: look afresh
                step = max(self.ask - 1, 1) << misses
                misses += 1
                if below is not None and above is not None:
                    at = max(below, (below + above - self.ask) // 2)
                elif side > 0:
                    at += step
                else:
                    at -= step
                at = max(self.first, at)
                continue
            below = above = None
            misses = 0
            starts = ties[0] > 0 or at <= self.first
            ends = ties[-1] < len(jobs) - 1 or len(jobs) < self.ask
            if starts and ends:
                break
            if not starts and not ends:
                break  # more of them than a read holds: see `walk_pages`
            # place them so the side not seen yet gets most of the next read,
            # leaving a few records for what moves meanwhile
            margin = max(1, (len(jobs) - (ties[-1] - ties[0] + 1)) // 4)
            if starts:  # they go on past this read: read on from just before
                if ties[0] <= 1:
                    break  # more of them than a read holds: see `walk_pages`
                at += ties[0] - min(margin, ties[0] - 1)
            else:  # they begin before this read: read from further back
                room = len(jobs) - 1 - ties[-1]
                # a short read ends the list: what it did not fill is room too
                back = max(room - min(margin, room - 1), 1) + self.ask - len(jobs)
                at = max(self.first, at - back)
        else:
            raise ListingMovedError(
                reason="records moved too far while listing to read jobs created "
                "at the same time together",
                project_id=self.project_id,
                offset=self.resume,
            )
        chain.last, chain.sure, chain.tied = last, sure, None
        if page is None or not found:
            return None
        jobs = tuple(found.values())
        delivered = self.deliver(attrs.evolve(page, jobs=jobs), range(len(jobs)))
        chain.last, chain.sure = last, sure
        self.resume = resume  # what follows, follows the page before
        if delivered is None:
            return None
        return attrs.evolve(delivered, offset=resume - len(delivered.jobs))

    async def reread(
        self, position: int, target: int
    ) -> tuple[list[JobPage], int, IefError | None]:
        """
        Re-read from the last record yielded (at *position* when last seen) to
        *target*, or to the end: the pages to yield, where the walk is then (-1:
        at the end) and the error to raise once they are yielded, if any.
        """
        out: list[JobPage] = []
        try:
            position = await self._reread(out, position, target)
        except IefError as exc:
            return out, -1, exc  # what was read is the caller's before the error
        return out, position, None

    async def _reread(self, out: list[JobPage], position: int, target: int) -> int:
        """
        Read from *position* to *target* into *out*; where the walk is then.

        Each read starts early by how far records moved back lately (deletions
        before them), further back or on after each read that holds no record
        yielded before. The number of requests is bounded: a server whose
        records never line up ends in `ListingMovedError`.
        """
        chain, linked, misses = self.chain, False, 0
        anew = restarted = False  # lost, starting over from the first offset
        emptied = False  # the last read came back empty
        trust = True  # created_at tells which way to look
        shift = -self.lag  # where to read, from where the last record was
        below: int | None = None  # a read position before the last record
        above: int | None = None  # a read position past it
        reads = 32 + 8 * math.ceil(max(target - position, 1) / max(self.stride, 1))
        while reads > 0:
            reads -= 1
            expect = position - self.overlap  # where the last record was
            at = max(self.first, expect + shift)
            asked = self.ask
            page = await self.settle(self.fetch_page(at, asked), asked)
            picks: range | list[int] | None = None
            if page.jobs and anew:
                picks, anew = chain.anew(page.jobs), False
            elif page.jobs:
                picks = chain.link(page.jobs)
            if picks is None:
                if not page.jobs and at <= self.first:
                    return -1  # nothing is left of the list
                # an empty page right after one that lined up: the list ends
                # before here, unless deletions moved its last jobs back: look
                emptied = not page.jobs and (linked or emptied)
                misses, linked = misses + 1, False
                # look further on when the page sorts before the last record
                # (jobs created before it), further back otherwise; once both
                # ends are known, halfway between them
                side = 0
                if trust and chain.last is not None:
                    side = _side(page.jobs, chain.last.created_at)
                if side > 0:
                    below = at + len(page.jobs) - 1
                elif side < 0 or not page.jobs:
                    above = at
                if below is not None and above is not None and above <= below + 1:
                    # the hints contradict each other (an order not by
                    # created_at): look both ways in turn from now on
                    trust, below, above = False, None, None
                if misses > _MISSES_MAX or above == self.first:
                    if restarted or not chain.remembers(self.delivered):
                        break
                    # every job yielded is still known: start over, skip those
                    anew = restarted = True
                    misses, shift, below, above = 0, self.first - expect, None, None
                    reads += 8 + math.ceil(target / max(self.stride, 1))
                    continue
                step = 1 << misses
                if below is not None and above is not None:
                    at = max(below, (below + above - asked) // 2)
                elif below is not None:
                    at = below + step
                elif above is not None:
                    at = above - step
                else:  # an order not by created_at: look both ways in turn
                    at = expect + (step if misses % 2 == 0 else -step)
                shift = at - expect
                continue
            if emptied and not picks:
                return -1  # back from an empty page, and nothing new
            below, above, emptied = None, None, False
            # how far the last record moved back: start the next read that much
            # earlier, and twice that, leaving room for new records
            moved = -shift if chain.moved is None else expect - at - chain.moved
            if not linked:
                self.lag = moved  # a first find: how far it had gone
            shift = -max(min(2 * moved, (asked - self.overlap) // 2), 0)
            linked, misses = True, 0
            split, key = self.split(page), chain.tied
            self.beyond(page.jobs, None)  # no record read past this page
            delivered = self.deliver(page, picks)
            if delivered is not None:
                out.append(delivered)
            if split is not None and key is not None:
                mended = await self.mend(split, key)
                if mended is not None:
                    out.append(mended)
            position = page.next_offset
            if self.delivered >= self.want or self.ends(page, asked):
                return -1
            if position >= target:
                return position
        raise ListingMovedError(
            reason="records moved too far while listing to find the last one yielded",
            project_id=self.project_id,
            offset=self.resume,
        )


async def walk_pages(
    fetch_page: FetchPage,
    query: ListQuery,
    *,
    project_id: str,
    window: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
) -> AsyncGenerator[JobPage, None]:
    """
    Yield the pages of one listing in order, fetching up to *window* at once.

    *query* gives where to start (``offset``), how much to ask for per request
    (``page_size``), how much to yield at most (``max_items``) and the order
    asked for (``sort``); *fetch_page* sends the rest of it. Each yielded page
    holds only records not yielded before, and its ``next_offset`` is where to
    resume. A job that exists for the whole walk is yielded exactly once, jobs
    created or deleted meanwhile at most once; the records are yielded in the
    order the server sent them.

    Example::

        query = ListQuery(page_size=50)
        async for page in walk_pages(fetch, query, project_id="p1", window=8):
            handle(page.jobs)

    Raises:
        ListingMovedError: Records moved so far that the walk lost its place.
    """
    walk = _Walk(fetch_page, query, project_id, on_progress)
    if walk.want <= 0:
        return
    first_limit = int(min(query.page_size, walk.want))
    # Unbounded, the first request peeks one record past its page, as a later
    # one does: a record past job_count shows a stale count even where the
    # count ends right at the first page's end, at no extra request. The page
    # still ends at page_size (the next one starts a record early anyway).
    first_ask = walk.ask if query.max_items is None else first_limit
    page = await walk.settle(fetch_page(query.offset, first_ask), first_ask)
    past = None
    if len(page.jobs) > first_limit:
        past = page.jobs[first_limit]
        page = attrs.evolve(page, jobs=page.jobs[:first_limit])
    jobs = page.jobs
    walk.delivered = len(jobs)
    walk.resume = page.next_offset
    walk.progress(page)
    yield page  # the first page, even when empty: it tells job_count
    if not jobs or walk.delivered >= walk.want or walk.ends(page, first_limit):
        return
    walk.chain.remember(jobs)
    walk.chain.follow(jobs)
    walk.beyond(jobs, past)
    chain = walk.chain

    # (start, new records, records asked for, whether the last one is a peek,
    # whether it was sent alone, the request), in order
    pending: deque[tuple[int, int, int, bool, bool, asyncio.Future[JobPage]]]
    pending = deque()
    position = scheduled = page.next_offset
    bounded = query.max_items is not None

    def send(
        start: int, new: int
    ) -> tuple[int, int, int, bool, bool, asyncio.Future[JobPage]]:
        asked = new + walk.overlap
        peek = bool(
            not bounded and not walk.follow and walk.overlap and asked < _LIMIT_MAX
        )
        if peek:
            # one record more, at no extra request: whether it shares the last
            # one's created_at tells if the boundary splits a tie; past
            # job_count, that the count was stale (and then it is yielded)
            asked += 1
        # one record a page is read one request at a time: then a job_count
        # that falls shows deletions that may have skipped a record
        alone = not walk.overlap and not pending
        request = asyncio.ensure_future(walk.fetch_page(start - walk.overlap, asked))
        return start, new, asked, peek, alone, request

    try:
        while walk.delivered < walk.want:
            horizon = position + (walk.want - walk.delivered)
            if not walk.follow:
                horizon = min(horizon, walk.count)
            scheduled = max(scheduled, position)
            while (
                len(pending) < (window if walk.overlap else 1) and scheduled < horizon
            ):
                # only max_items shrinks a request: a full last page also takes
                # in records that creations pushed past the end meanwhile
                new = walk.stride
                if bounded:
                    new = int(min(new, horizon - scheduled))
                pending.append(send(scheduled, new))
                scheduled += new
            if pending:
                start, new, asked, peek, alone, request = pending.popleft()
                page = await walk.settle(request, asked, alone)
                past = None
                if peek and not walk.follow and len(page.jobs) == asked:
                    past, asked = page.jobs[-1], asked - 1
                    page = attrs.evolve(page, jobs=page.jobs[:-1])
                picks = chain.link(page.jobs) if walk.overlap else _unseen(chain, page)
                if picks is not None:
                    if page.jobs:
                        walk.beyond(page.jobs, past)
                    key = chain.tied
                    split = None if key is None else walk.split(page)
                    done = walk.deliver(page, picks)
                    position = page.next_offset
                    if done is not None:
                        yield done
                    if split is not None and key is not None:
                        done = await walk.mend(split, key)
                        if done is not None:
                            yield done
                    if walk.ends(page, asked):
                        break
                    if position < start + new:
                        # a short page: fetch the rest of its range first
                        pending.appendleft(send(position, start + new - position))
                    continue
                if start + new <= position:
                    continue  # a re-read went past this page already
                # records moved past this boundary: read it again from the
                # last record yielded, up to where this page should have ended
                target = start + new
            else:
                # job_count says the end is behind, but no page showed it (the
                # pages saw the list at other moments): read on to it
                target = position + 1
            reread, position, error = await walk.reread(position, target)
            for out in reread:
                yield out
            if error is not None:
                raise error
            if position < 0:
                break
    finally:
        await _cancel_all(request for *_, request in pending)


def _side(jobs: tuple[BatchJob, ...], key: datetime) -> int:
    """
    Whether all of *jobs* sort before a job created at *key* (1) or after it
    (-1), by their own order of created_at; 0 when that order does not tell.
    A hint of where to look, never trusted to tell a record's identity.
    """
    if not jobs:
        return 0
    times = [job.created_at for job in jobs]
    head, tail = times[0], times[-1]
    if head < tail and times == sorted(times):  # oldest first
        return 1 if tail < key else -1 if head > key else 0
    if head > tail and times == sorted(times, reverse=True):  # newest first
        return 1 if tail > key else -1 if head < key else 0
    return 0


def _unseen(chain: _Chain, page: JobPage) -> list[int]:
    """Without an overlap to check (one record a page), skip only duplicates."""
    if not page.jobs:
        return []
    picks = chain.link(page.jobs)
    if picks is None:
        chain.follow(page.jobs)
        return list(range(len(page.jobs)))
    return list(picks)


async def _cancel_all(tasks: Iterable[asyncio.Future[JobPage]]) -> None:
    """Cancel what is still in flight and wait until it is really gone."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    try:
        # wait() does not raise a task's error; we read each one below
        await asyncio.wait(tasks)
    finally:
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # seen: no "exception was never retrieved"
