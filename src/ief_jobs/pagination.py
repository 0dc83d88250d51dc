"""
The page walk for one project, as a function of a ``fetch_page(offset, limit)``
callable: no HTTP here, so property tests drive it with a fake server.

The walk:

* asks for the first page, learns ``job_count`` (and the server's real page size,
  if it caps ``limit``), then keeps up to *window* later pages in flight while
  yielding pages strictly in order;
* asks each later page from one record before its start and one record past
  its end (a ``limit`` two larger, never an extra request; IEF refuses a
  ``limit`` over 1000, so a page brings at most 998 new records, and against
  a server that caps ``limit`` each request fits the two in what it serves)
  and checks that its first record is the last one yielded, by ``job_id``,
  and that neither read shows the jobs sharing that record's ``created_at``
  go on across the boundary (the record peeked past the earlier page, the
  second record of the later one). When that holds, every job that existed
  between the two reads is in one of the two pages: nothing was skipped, and
  no record is looked at one by one;
* when it does not hold (jobs were created or deleted, or jobs with equal
  ``created_at`` swapped places), tells what was yielded already by ``job_id``
  (from then on it keeps every id it yields) and yields the rest; a page that
  shares no record with what was yielded means records moved past the
  boundary, so it re-reads from the last record yielded until it finds it
  again (``created_at`` only hints which way to look), a bounded number of
  requests, else `ListingMovedError`. Jobs sharing the ``created_at`` a
  boundary splits (or may split, where no record past a page was read) are
  read again before the later page is yielded, in reads that grow until one
  holds them all with a record on each side: their order may change on
  every read (a server ordering by a ``created_at`` of whole seconds and
  nothing else), so only such a read shows every one. Once more of them than
  a page holds swap places, pages read at other moments show other parts of
  them, so the walk reads one page at a time from then on. Neither
  ``job_count`` nor the sort order decides what is a duplicate: records are
  yielded in the order the server sent them, whatever ``sort`` was asked,
  and none is dropped for where it arrived;
* advances by what the pages hold, never ``offset + limit``, and fills in any
  short page instead of skipping past it;
* ends at ``job_count`` (the peek past the last page shows a count that is
  stale), or, once a page holds records past ``job_count``, at the first
  short page (`JobCountStale`);
* with *max_items*, shrinks the last request so it fetches no record it will not
  yield (but the one before it and the one past it); never asks for a page
  past the end.

So a job that exists for the whole walk is yielded exactly once, whatever jobs
come and go meanwhile and however jobs of equal ``created_at`` swap places
between reads, and a job created or deleted meanwhile at most once. Nothing of
this costs a request when nothing changes (but the one re-read of jobs sharing
a ``created_at`` that a boundary splits, and of the first boundary of a server
whose cap the first page shows). Where that cannot hold, the walk says so with
`ListingMovedError` rather than a short listing:

* records that move further than a page between two reads (a server capping
  pages at a few records under heavy churn);
* a server that serves fewer than three records a request: no read can hold
  the last record yielded, a new one and one past it, so no boundary can be
  checked (as many creations as deletions leave the count and every read
  alike). The first page is yielded, then the walk raises;
* more jobs sharing one ``created_at`` than one request brings, in an order
  that changes between two reads of the same records: no read can show every
  one. In an order that holds, the identity checks suffice, and the walk goes on.

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
# records a read needs to check a boundary (the last record yielded, a new one
# and one past it) or to hold a job with a record on each side
_READ_LEAST: Final = 3
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


def _with_jobs(page: JobPage, jobs: tuple[BatchJob, ...]) -> JobPage:
    """*page* holding *jobs* instead (a third of what ``attrs.evolve`` costs)."""
    return JobPage(
        project_id=page.project_id,
        offset=page.offset,
        job_count=page.job_count,
        jobs=jobs,
        request_id=page.request_id,
    )


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
        "crowded",
        "delivered",
        "fetch_page",
        "first",
        "follow",
        "lag",
        "most",
        "newest_first",
        "on_progress",
        "project_id",
        "reported",
        "resume",
        "size",
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
        self.crowded = False  # more jobs shared a created_at than a page holds
        self.newest_first: bool | None = None  # the order reads showed lately
        self.reported: set[type[Warning]] = set()  # once per listing
        # A later request asks from one record before its page (the overlap)
        # to one past it (the peek). IEF refuses a limit over 1000, so a page
        # of 999 or 1000 brings 998 new records; a larger page_size is the
        # server's to take or refuse.
        size = query.page_size
        self.size = min(size, _LIMIT_MAX - 2) if size <= _LIMIT_MAX else size
        self.ask = self.size + 1  # records a later request asks for, but the peek
        # the most records a request brings (less where the server caps)
        self.most = max(_LIMIT_MAX, self.size + 2)
        self.widest = 0  # the most records one page held
        self.lag = 0  # how far records had moved back when a re-read found them
        self.chain = _Chain(_KEPT_PAGES * self.ask)

    @property
    def stride(self) -> int:
        """New records a full later page brings."""
        return self.ask - 1

    async def settle(self, answer: Awaitable[JobPage], limit: int) -> JobPage:
        try:
            page = await answer
        except IefError as exc:
            exc.offset = self.resume  # not where the request began: one earlier
            raise
        jobs = page.jobs
        if len(jobs) > limit:
            jobs = jobs[:limit]  # no more room than asked for
            page = _with_jobs(page, jobs)
        n = len(jobs)
        if len(set(map(_job_id, jobs))) < n:
            page = _with_jobs(page, _distinct(jobs))
            n = len(page.jobs)
        self.widest = max(self.widest, n)
        if n and jobs[0].created_at != jobs[-1].created_at:
            self.newest_first = jobs[0].created_at > jobs[-1].created_at
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
        server: later requests ask for what it gave, the peek included. A
        server that never gave three records leaves no room to check a
        boundary (the last record yielded, a new one, one past it): that ends
        in `ListingMovedError` rather than a listing that may have skipped.
        """
        n = len(page.jobs)
        if n >= asked:
            return not self.follow and page.offset + n >= page.job_count
        if self.follow or page.offset + n >= page.job_count or n == 0:
            return True
        if n == 1 and self.widest > 1:
            return True  # nothing new where the count says more: stale
        if self.widest < _READ_LEAST:
            raise ListingMovedError(
                reason=f"the server serves at most {self.widest} "
                f"record{'' if self.widest == 1 else 's'} a request, too few to "
                f"check that no job moved past a page boundary (that takes "
                f"{_READ_LEAST})",
                project_id=self.project_id,
                offset=self.resume,
            )
        if n >= _READ_LEAST:
            self.most = min(self.most, n)
            self.ask = min(self.ask, n - 1)
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
        *past*, the record read after them, shares the last one's created_at,
        or was not read (a page cut short, a cap met late): then only the next
        read can tell.
        """
        self.chain.ahead = past is None or past.created_at == jobs[-1].created_at

    async def mend_before(
        self, page: JobPage, picks: range | list[int]
    ) -> tuple[JobPage | None, range | list[int]]:
        """
        Read the jobs sharing the created_at that the boundary before *page*
        split, if it split one, before *page* is yielded (they sort before its
        own records, and max_items may end the listing with it): the page of
        those no read showed yet, and *picks* without them.
        """
        key, at = self.chain.tied, self.split(page)
        if key is None or at is None:
            return None, picks
        mended = await self.mend(at, key)
        if mended is None:
            return None, picks
        ids = self.chain.ids()
        return mended, [i for i in picks if page.jobs[i].job_id not in ids]

    async def mend(self, at: int, key: datetime) -> JobPage | None:
        """
        Read from about *at* the jobs created at *key* that no read showed yet,
        until one read holds all of them with a record on each side (or the
        list's end): their order may change on every read, so only such a read
        shows every one. A read too small for them is doubled, up to what the
        server serves. Where even that is too small, a second read of the same
        records tells whether their order changes; if it does, no read can
        show every one, and the walk says so (`ListingMovedError`). Bounded:
        records that move too far between the reads end in it too.
        """
        chain, resume = self.chain, self.resume
        last, sure = chain.last, chain.sure
        limit = min(self.ask + 1, self.most)  # at least _READ_LEAST
        found: dict[str, BatchJob] = {}
        page: JobPage | None = None
        # reads that held none of them: the last before them, the first past
        below: int | None = None
        above: int | None = None
        misses = 0
        for _ in range(_MEND_READS):
            page = await self.settle(self.fetch_page(at, limit), limit)
            jobs = page.jobs
            short = len(jobs) < limit
            if short and at + len(jobs) < page.job_count and len(jobs) >= _READ_LEAST:
                # a cap the walk had not met: no read brings more, and this
                # one does not end the list
                self.most = limit = len(jobs)
                short = False
            for i in chain.mend(jobs, key):
                found.setdefault(jobs[i].job_id, jobs[i])
            ties = [i for i, job in enumerate(jobs) if job.created_at == key]
            if not ties:
                # a read of one record or none is at the list's end: look back
                side = _side(jobs, key, self.newest_first) if len(jobs) > 1 else -1
                if side == 0 or (side > 0 and short) or (not jobs and at <= self.first):
                    # none of them left (this read ends the list before where
                    # they would be, or nothing is left of it), or an order
                    # not by created_at
                    break
                # look further on when the read sorts before them, else back,
                # further each time (they may be moving away); once both ends
                # are known, halfway between them
                if side > 0:
                    below = at + len(jobs) - 1
                else:
                    above = at
                if below is not None and above is not None and above <= below + 1:
                    below = above = None  # moved meanwhile: look afresh
                step = max(limit - 2, 1) << misses
                misses += 1
                if below is not None and above is not None:
                    at = max(below, (below + above - limit + 1) // 2)
                elif side > 0:
                    at += step
                else:
                    at -= step
                at = max(self.first, at)
                continue
            below = above = None
            misses = 0
            starts = ties[0] > 0 or at <= self.first
            ends = ties[-1] < len(jobs) - 1 or short
            if starts and ends:
                break
            # the next read is wider, up to what the server serves, and placed
            # so the side not seen yet gets the room, leaving a few records
            # for what moves meanwhile
            wider = min(2 * limit, self.most)
            crowded = (not starts or ties[0] <= 1) and not ends  # they fill it
            self.crowded = self.crowded or crowded
            if wider == limit and crowded:
                # more of them than a read holds: whether their order holds
                # between reads tells if the walk's own checks suffice
                if await self.reordered(at, limit, key, jobs):
                    when = key.isoformat()
                    raise ListingMovedError(
                        reason=f"more jobs share one created_at ({when}) than "
                        f"one request brings ({limit}), and the server orders "
                        "them differently on every read, so no read can show "
                        "every one",
                        project_id=self.project_id,
                        offset=self.resume,
                    )
                break
            margin = max(1, (len(jobs) - (ties[-1] - ties[0] + 1)) // 4)
            if not starts and not ends:  # all of it was theirs: widen both ways
                at = max(self.first, at - (wider - limit) // 2)
            elif starts:  # they go on past this read: read on from just before
                if ties[0] > 1:
                    at += ties[0] - min(margin, ties[0] - 1)
            else:  # they begin before this read: read from further back
                # (a short read ends the list: what it did not fill is room too)
                end = at + min(ties[-1] + 1 + margin, len(jobs))
                at = max(self.first, min(at - 1, end - wider))
            limit = wider
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
        delivered = self.deliver(_with_jobs(page, jobs), range(len(jobs)))
        chain.last, chain.sure = last, sure
        self.resume = resume  # what follows, follows the page before
        if delivered is None:
            return None
        return attrs.evolve(delivered, offset=resume - len(delivered.jobs))

    async def reordered(
        self, at: int, limit: int, key: datetime, jobs: tuple[BatchJob, ...]
    ) -> bool:
        """
        Whether a second read from *at* shows the jobs created at *key* that
        *jobs* (the first read from there) holds in another order.
        """
        again = (await self.settle(self.fetch_page(at, limit), limit)).jobs
        first = [job.job_id for job in jobs if job.created_at == key]
        second = [job.job_id for job in again if job.created_at == key]
        # jobs that came or went meanwhile do not tell the order: only the
        # ones both reads hold
        both = set(first).intersection(second)
        return [i for i in first if i in both] != [i for i in second if i in both]

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
            expect = position - 1  # where the last record was
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
                    side = _side(page.jobs, chain.last.created_at, self.newest_first)
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
            shift = -max(min(2 * moved, (asked - 1) // 2), 0)
            linked, misses = True, 0
            self.beyond(page.jobs, None)  # no record read past this page
            mended, picks = await self.mend_before(page, picks)
            if mended is not None:
                out.append(mended)
            delivered = self.deliver(page, picks)
            if delivered is not None:
                out.append(delivered)
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
    first_limit = int(min(walk.size, walk.want))
    # The first request peeks one record past its page, as a later one does:
    # a record past job_count shows a stale count even where the count ends
    # right at the first page's end, at no extra request; one sharing the
    # last record's created_at, a tie the boundary splits. The page still
    # ends at page_size (the next one starts a record early anyway).
    first_ask = first_limit + 1
    page = await walk.settle(fetch_page(query.offset, first_ask), first_ask)
    past = None
    if len(page.jobs) > first_limit:
        past = page.jobs[first_limit]
        page = _with_jobs(page, page.jobs[:first_limit])
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
    # the request), in order
    pending: deque[tuple[int, int, int, bool, asyncio.Future[JobPage]]]
    pending = deque()
    position = scheduled = page.next_offset
    bounded = query.max_items is not None

    def send(
        start: int, new: int
    ) -> tuple[int, int, int, bool, asyncio.Future[JobPage]]:
        asked = new + 1  # from the last record yielded
        # one record more, at no extra request: whether it shares the last
        # one's created_at tells if the boundary splits a tie; past job_count,
        # that the count was stale (the next page starts with it anyway)
        peek = asked < walk.most
        if peek:
            asked += 1
        request = asyncio.ensure_future(walk.fetch_page(start - 1, asked))
        return start, new, asked, peek, request

    try:
        while walk.delivered < walk.want:
            horizon = position + (walk.want - walk.delivered)
            if not walk.follow:
                horizon = min(horizon, walk.count)
            scheduled = max(scheduled, position)
            while len(pending) < window and scheduled < horizon:
                # only max_items shrinks a request: a full last page also takes
                # in records that creations pushed past the end meanwhile
                new = walk.stride
                if bounded:
                    new = int(min(new, horizon - scheduled))
                pending.append(send(scheduled, new))
                scheduled += new
            if pending:
                start, new, asked, peek, request = pending.popleft()
                page = await walk.settle(request, asked)
                past = None
                if peek and len(page.jobs) == asked:
                    past, asked = page.jobs[-1], asked - 1
                    page = _with_jobs(page, page.jobs[:-1])
                picks = chain.link(page.jobs)
                if picks is not None:
                    if page.jobs:
                        walk.beyond(page.jobs, past)
                    if chain.tied is not None:  # a boundary split a tie
                        done, picks = await walk.mend_before(page, picks)
                        if done is not None:
                            yield done
                    done = walk.deliver(page, picks)
                    position = page.next_offset
                    if done is not None:
                        yield done
                    if walk.crowded and window > 1:
                        # more jobs share a created_at than a page holds and
                        # they swap places: pages read at other moments show
                        # other parts of them, so read one at a time
                        window = 1
                        await _cancel_all(request for *_, request in pending)
                        pending.clear()
                        scheduled = position
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


def _side(jobs: tuple[BatchJob, ...], key: datetime, newest_first: bool | None) -> int:
    """
    Whether all of *jobs* sort before a job created at *key* (1) or after it
    (-1), by their own order of created_at (or, where they share one, by
    *newest_first*, the order pages showed so far); 0 when that does not tell.
    A hint of where to look, never trusted to tell a record's identity.
    """
    if not jobs:
        return 0
    times = [job.created_at for job in jobs]
    head, tail = times[0], times[-1]
    ascending = head < tail and times == sorted(times)
    descending = head > tail and times == sorted(times, reverse=True)
    if head == tail and newest_first is not None and times.count(head) == len(times):
        ascending, descending = not newest_first, newest_first
    if ascending:
        return 1 if tail < key else -1 if head > key else 0
    if descending:
        return 1 if tail > key else -1 if head < key else 0
    return 0


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
