"""
The walk's decisions as a state machine with no I/O.

A `Cursor` says which reads to make and, given each read's answer, what
follows: pages to deliver, another read, the end, or `ListingMovedError`. It
never awaits anything: a driver (`driver.walk_pages`, or a test) makes the
reads and hands the answers back, step by step::

    cursor = Cursor(ListQuery(page_size=50), project_id="p1", window=4)
    step = cursor.advance()
    while step is not None:
        if isinstance(step, Start):  # send the read; True: it was sent
            step = cursor.advance(True)
        elif isinstance(step, Collect):  # the read's answer, a JobPage
            step = cursor.advance(fetch(step.read.offset, step.read.limit))
        else:  # Deliver, Drop or Notice: act on it
            step = cursor.advance()

The steps the cursor takes, in order:

1. the first read, which tells ``job_count`` (and the server's cap, if any);
2. later reads, up to *window* of them sent ahead, each from one record
   before its page to one past it, collected in order; each is checked at its
   boundary (`Boundary.check`) and its new records delivered;
3. where a boundary split jobs of equal ``created_at``, those are read again
   together first (`Cursor._mend`); where a read shares no record with what
   was delivered, the walk re-reads from the last record delivered until it
   finds it (`Cursor._reread`); both find their place with one `Search`;
4. the end: ``job_count`` records, *max_items*, or (a stale count) the first
   short page.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from datetime import datetime
from typing import Final, TypeAlias, TypeVar

import attrs

from ief_jobs.errors import ListingMovedError
from ief_jobs.models import BatchJob, JobPage, ListQuery, Progress

from .boundary import Boundary, Fresh, read_stride
from .search import Search, side_of
from .steps import Answer, Collect, Deliver, Drop, Notice, Read, Start, Step

__all__ = ["LIMIT_MAX", "Cursor", "JobCountChanged", "JobCountStale"]

LIMIT_MAX: Final = 1000  # IEF's list calls refuse a larger limit (IEF.100005)
_KEPT_PAGES: Final = 4  # pages of ids a walk tells duplicates by: more than moves
_MISSES_MAX: Final = 16  # reads in a row that find no known record
# records a read needs to check a boundary (the last record yielded, a new one
# and one past it) or to hold a job with a record on each side
_READ_LEAST: Final = 3
_MEND_READS: Final = 32  # reads that look for all of a tie's jobs at once


class JobCountChanged(UserWarning):
    """``job_count`` changed during a walk: jobs were created or deleted meanwhile."""


class JobCountStale(JobCountChanged):
    """
    A page held records past the ``job_count`` it reported: the count is stale.

    The walk then follows the records to the first short page instead.
    """


T = TypeVar("T")
Steps: TypeAlias = Generator[Step, Answer, T]


@attrs.define
class _Ahead:
    """A later read sent ahead: its page's *start*, the *new* records it brings."""

    start: int
    new: int
    read: Read
    peeks: bool  # the read asks one record past its page


@attrs.define
class _Found:
    """A later read as checked: its page, the record past it, what it asked."""

    page: JobPage
    past: BatchJob | None
    asked: int


@attrs.define
class _Relocation:
    """Where a re-read stands while it looks for the last record delivered."""

    reads: int  # reads left before it gives up
    shift: int  # where to read, from where the last record was
    search: Search | None = None
    linked: bool = False  # the last read found it
    emptied: bool = False  # the last read came back empty
    starting_over: bool = False  # lost: read from the first offset again
    restarted: bool = False  # it did so once


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


class Cursor:
    """
    One listing's walk, as a state machine: `advance` it with each answer.

    *query* gives where to start (``offset``), how much to ask for per read
    (``page_size``, at most 998: a later read adds the record before its page
    and one past it, and IEF refuses a ``limit`` over 1000) and how much to
    deliver (``max_items``); *window* is how many later reads may be sent ahead.
    """

    __slots__ = (
        "_steps",
        "_warned",
        "boundary",
        "delivered",
        "drift",
        "job_count",
        "later_ask",
        "newest_first",
        "page_size",
        "project_id",
        "report_progress",
        "resume_offset",
        "server_max",
        "stale_count",
        "start_offset",
        "tie_overflow",
        "wanted",
        "widest_read",
        "window",
    )

    def __init__(
        self,
        query: ListQuery,
        *,
        project_id: str,
        window: int = 1,
        report_progress: bool = False,
    ) -> None:
        self.project_id = project_id
        self.report_progress = report_progress
        self.window = window
        self.start_offset = query.offset
        self.wanted = math.inf if query.max_items is None else query.max_items
        self.delivered = 0
        self.resume_offset = query.offset  # where the pages delivered end
        self.job_count = -1  # as the latest read told it
        self.stale_count = False  # job_count is stale: the records tell the end
        self.tie_overflow = False  # more jobs shared a created_at than a read holds
        self.newest_first: bool | None = None  # the order reads showed lately
        self._warned: set[type[Warning]] = set()  # once per listing
        self.page_size = min(query.page_size, LIMIT_MAX - 2)
        self.later_ask = self.page_size + 1  # a later read, but for its peek
        self.server_max = LIMIT_MAX  # the most a read brings (less if capped)
        self.widest_read = 0  # the most records one read held
        self.drift = 0  # how far records had moved back when a re-read found them
        self.boundary = Boundary(_KEPT_PAGES * self.later_ask)
        self._steps = self._walk()

    def advance(self, answer: Answer = None) -> Step | None:
        """
        The next step, given the *answer* to the last one (a `JobPage` for
        `Collect`, whether it was sent for `Start`, else None); None at the end.

        Raises:
            ListingMovedError: No read can tell that nothing was skipped.
        """
        try:
            return self._steps.send(answer)
        except StopIteration:
            return None

    @property
    def stride(self) -> int:
        """New records a full later read brings."""
        return read_stride(self.later_ask)  # it starts at the last record delivered

    # -- the walk ------------------------------------------------------------

    def _walk(self) -> Steps[None]:
        if self.wanted <= 0:
            return
        page, past, limit = yield from self._first_read()
        self.delivered = len(page.jobs)
        self.resume_offset = page.next_offset
        yield Deliver(page, self._progress(page))  # even empty: it tells job_count
        if not page.jobs or self.delivered >= self.wanted or self._ends(page, limit):
            return
        self.boundary.yielded(page.jobs)
        self.boundary.last = page.jobs[-1]
        self.boundary.note_past(page.jobs, past)
        yield from self._later_reads(page.next_offset)

    def _first_read(self) -> Steps[tuple[JobPage, BatchJob | None, int]]:
        """
        The first page, the record past it if read, and its size. The first
        read peeks one record past its page, as a later one does: a record past
        job_count shows a stale count even where the count ends right at the
        first page's end, at no extra request; one sharing the last record's
        created_at, a tie the boundary splits. The page still ends at
        page_size (the next read starts a record early anyway).
        """
        limit = int(min(self.page_size, self.wanted))
        page = yield from self._read(Read(self.start_offset, limit + 1))
        if len(page.jobs) <= limit:
            return page, None, limit
        return _with_jobs(page, page.jobs[:limit]), page.jobs[limit], limit

    def _later_reads(self, position: int) -> Steps[None]:
        """Read on from *position*, up to *window* reads ahead, in order."""
        ahead: deque[_Ahead] = deque()
        sent = position  # where the reads sent ahead end
        while self.delivered < self.wanted:
            sent = yield from self._send_ahead(ahead, position, sent)
            if not ahead:
                # job_count says the end is behind, but no read showed it (the
                # reads saw the list at other moments): read on to it
                target = position + 1
            else:
                head = ahead.popleft()
                found = yield from self._collect(head)
                fresh = self.boundary.check(found.page.jobs)
                if fresh is not None:
                    position, ended = yield from self._lined_up(found, fresh)
                    if ended:
                        return
                    if self.tie_overflow and self.window > 1:
                        # more jobs share a created_at than a read holds and
                        # they swap places: reads made at other moments show
                        # other parts of them, so read one at a time
                        self.window = 1
                        yield Drop(tuple(entry.read for entry in ahead))
                        ahead.clear()
                        sent = position
                    if position < head.start + head.new:
                        # a short page: read the rest of its range first
                        entry = self._ahead(position, head.start + head.new - position)
                        yield Start(entry.read, optional=False)
                        ahead.appendleft(entry)
                    continue
                if head.start + head.new <= position:
                    continue  # a re-read went past this page already
                # records moved past this boundary: read it again from the
                # last record delivered, up to where this page should end
                target = head.start + head.new
            position = yield from self._reread(position, target)
            if position < 0:
                return

    def _send_ahead(self, ahead: deque[_Ahead], position: int, sent: int) -> Steps[int]:
        """Send reads ahead, up to *window* and the end; where they end then."""
        horizon = position + (self.wanted - self.delivered)
        if not self.stale_count:
            horizon = min(horizon, self.job_count)
        sent = max(sent, position)
        while len(ahead) < self.window and sent < horizon:
            # only max_items shrinks a read: a full last page also takes in
            # records that creations pushed past the end meanwhile
            new = self.stride
            if self.wanted != math.inf:
                new = int(min(new, horizon - sent))
            entry = self._ahead(sent, new)
            if not (yield Start(entry.read, optional=bool(ahead))):
                break  # refused: the reads sent ahead come first
            ahead.append(entry)
            sent += new
        return sent

    def _ahead(self, start: int, new: int) -> _Ahead:
        """
        The read of the *new* records from *start*: from the last record
        delivered, and one record more at no extra request: whether it shares
        the last one's created_at tells if the boundary splits a tie; past
        job_count, that the count was stale.
        """
        limit = new + 1
        peeks = limit < self.server_max
        if peeks:
            limit += 1
        return _Ahead(start, new, Read(start - 1, limit), peeks)

    def _collect(self, head: _Ahead) -> Steps[_Found]:
        """The answer to the read *head*, the record past its page cut off."""
        page = yield from self._read(head.read)
        asked = head.read.limit
        if head.peeks and len(page.jobs) == asked:
            past = page.jobs[-1]
            return _Found(_with_jobs(page, page.jobs[:-1]), past, asked - 1)
        return _Found(page, None, asked)

    def _lined_up(self, found: _Found, fresh: Fresh) -> Steps[tuple[int, bool]]:
        """Deliver a read that shares records with the last: the position, ended."""
        page = found.page
        if page.jobs:
            self.boundary.note_past(page.jobs, found.past)
        if self.boundary.split_tie is not None:
            fresh = yield from self._mend_before(page, fresh)
        step = self._deliver(page, fresh)
        if step is not None:
            yield step
        return page.next_offset, self._ends(page, found.asked)

    # -- one read, as the cursor takes it --------------------------------------

    def _read(self, read: Read) -> Steps[JobPage]:
        """The answer to *read*: trimmed to its limit, each record once."""
        answer = yield Collect(read)
        if not isinstance(answer, JobPage):
            msg = f"a Collect step takes a JobPage, not {type(answer).__name__}"
            raise TypeError(msg)
        page = answer
        jobs = page.jobs
        if len(jobs) > read.limit:
            page = _with_jobs(page, jobs[: read.limit])  # no more than asked for
        # a comprehension's specialised slot read beats map(attrgetter) ~2x here
        if len({job.job_id for job in page.jobs}) < len(page.jobs):
            page = _with_jobs(page, _distinct(page.jobs))
        notices = self._learn(page)
        if notices:
            yield from notices
        return page

    def _learn(self, page: JobPage) -> list[Notice]:
        """What *page* tells of the server (widest read, order, job_count)."""
        jobs, n = page.jobs, len(page.jobs)
        self.widest_read = max(self.widest_read, n)
        if n and jobs[0].created_at != jobs[-1].created_at:
            self.newest_first = jobs[0].created_at > jobs[-1].created_at
        notices = []
        if page.job_count != self.job_count and self.job_count >= 0:
            notices.append(
                Notice(
                    JobCountChanged,
                    "job_count changed while listing: jobs were created or "
                    "deleted meanwhile",
                    "job_count of project %s changed from %d to %d at offset %d",
                    (self.job_count, page.job_count, page.offset),
                )
            )
        self.job_count = page.job_count
        if n and not self.stale_count and page.offset + n > page.job_count:
            self.stale_count = True
            notices.append(
                Notice(
                    JobCountStale,
                    "job_count is lower than the records: following the records "
                    "to the first short page",
                    "job_count of project %s is %d but a page at offset %d holds "
                    "%d records",
                    (page.job_count, page.offset, n),
                )
            )
        # each once per listing
        fresh = [notice for notice in notices if notice.category not in self._warned]
        self._warned.update(notice.category for notice in fresh)
        return fresh

    def _ends(self, page: JobPage, asked: int) -> bool:
        """
        Whether *page*, asked for *asked* records, is the last one.

        A short page that ``job_count`` says is not the last was capped by the
        server: later reads ask for what it gave, the peek included. A server
        that never gave three records leaves no room to check a boundary (the
        last record delivered, a new one, one past it): that ends in
        `ListingMovedError` rather than a listing that may have skipped.
        """
        n = len(page.jobs)
        if n >= asked:
            return not self.stale_count and page.offset + n >= page.job_count
        if self.stale_count or page.offset + n >= page.job_count or n == 0:
            return True
        if n == 1 and self.widest_read > 1:
            return True  # nothing new where the count says more: stale
        if self.widest_read < _READ_LEAST:
            raise self._too_few_records()
        if n >= _READ_LEAST:
            self.server_max = min(self.server_max, n)
            self.later_ask = min(self.later_ask, n - 1)
        return False

    def _reread_ends(self, page: JobPage) -> bool:
        """
        Whether the re-read *page* ends the listing. One that is full and ends
        right at ``job_count`` does not: it read no record past its page, so
        a count one too low (stale) does not show; the next read tells.
        """
        if self.delivered >= self.wanted:
            return True
        n = len(page.jobs)
        if not self.stale_count and n >= self.later_ask:
            return page.offset + n > page.job_count
        return self._ends(page, self.later_ask)

    def _too_few_records(self) -> ListingMovedError:
        most = self.widest_read
        return ListingMovedError(
            reason=f"the server serves at most {most} record{'' if most == 1 else 's'}"
            " a request, too few to check that no job moved past a page boundary"
            f" (that takes {_READ_LEAST}); resuming cannot help: the server (or a"
            f" proxy before it) must serve at least {_READ_LEAST} records a request",
            project_id=self.project_id,
            offset=self.resume_offset,
        )

    def _moved(self, what: str) -> ListingMovedError:
        return ListingMovedError(
            reason=f"records moved too far while listing to {what}; nothing was "
            "skipped before the offset: list again with offset=exc.offset to "
            "complete the listing (records yielded already may come again)",
            project_id=self.project_id,
            offset=self.resume_offset,
        )

    # -- delivering ------------------------------------------------------------

    def _deliver(self, page: JobPage, fresh: Fresh) -> Deliver | None:
        """The step delivering *fresh* of *page*, at most what is still wanted."""
        room = self.wanted - self.delivered
        if isinstance(fresh, range):
            end = fresh.stop if room >= len(fresh) else fresh.start + int(room)
            jobs = page.jobs[fresh.start : end]
        else:
            chosen = fresh[: int(min(len(fresh), room))]
            jobs = tuple(page.jobs[i] for i in chosen)
            end = chosen[-1] + 1 if chosen else 0
        if not jobs:
            return None
        self.delivered += len(jobs)
        # the page's records before *end* were delivered before or are not
        # ours: next_offset stays the exact position to resume from
        self.resume_offset = page.offset + end
        self.boundary.yielded(jobs)
        delivered = JobPage(
            project_id=page.project_id,
            offset=self.resume_offset - len(jobs),
            job_count=page.job_count,
            jobs=jobs,
            request_id=page.request_id,
        )
        return Deliver(delivered, self._progress(page))

    def _progress(self, page: JobPage) -> Progress | None:
        if not self.report_progress:
            return None
        total = max(page.job_count - self.start_offset, self.delivered)
        target = int(min(total, self.wanted))
        return Progress(self.project_id, page.job_count, self.delivered, target)

    # -- jobs of equal created_at that a boundary split --------------------------

    def _mend_before(self, page: JobPage, fresh: Fresh) -> Steps[Fresh]:
        """
        Read the jobs sharing the created_at that the boundary before *page*
        split, before *page* is delivered (they sort before its own records,
        and max_items may end the listing with it); *fresh* without them.
        """
        key = self.boundary.split_tie
        if key is None:
            return fresh
        # where the jobs delivered at that created_at began, when last read
        at = max(self.start_offset, page.offset - self.boundary.count_yielded_at(key))
        mended = yield from self._mend(at, key)
        if mended is None:
            return fresh
        yield mended
        ids = self.boundary.known_ids()
        return [i for i in fresh if page.jobs[i].job_id not in ids]

    def _mend(self, at: int, key: datetime) -> Steps[Deliver | None]:
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
        limit = min(self.later_ask + 1, self.server_max)  # at least _READ_LEAST
        found: dict[str, BatchJob] = {}
        page: JobPage | None = None
        search = Search(
            key,
            origin=at,
            first=self.start_offset,
            newest_first=self.newest_first,
            unit=max(limit - 2, 1),
        )
        for _ in range(_MEND_READS):
            page = yield from self._read(Read(at, limit))
            jobs = page.jobs
            short = len(jobs) < limit
            if short and at + len(jobs) < page.job_count and len(jobs) >= _READ_LEAST:
                # a cap the walk had not met: no read brings more, and this
                # one does not end the list
                self.server_max = limit = len(jobs)
                short = False
            for i in self.boundary.unseen_at(jobs, key):
                found.setdefault(jobs[i].job_id, jobs[i])
            ties = [i for i, job in enumerate(jobs) if job.created_at == key]
            if ties:
                search.found(at)
                widened = yield from self._widen(
                    at, limit, key, jobs, ties, short=short
                )
                if widened is None:
                    break
                at, limit = widened
            elif (at := self._look_for_ties(search, at, jobs, limit, short)) < 0:
                break
        else:
            raise self._moved("read jobs created at the same time together")
        self.boundary.split_tie = None
        if page is None or not found:
            return None
        resume = self.resume_offset
        step = self._deliver(_with_jobs(page, tuple(found.values())), range(len(found)))
        self.resume_offset = resume  # what follows, follows the page before
        if step is None:
            return None
        offset = resume - len(step.page.jobs)
        return attrs.evolve(step, page=attrs.evolve(step.page, offset=offset))

    def _look_for_ties(
        self,
        search: Search,
        at: int,
        jobs: tuple[BatchJob, ...],
        limit: int,
        short: bool,
    ) -> int:
        """
        Where to read next for the jobs of *search*'s created_at, after a read
        from *at* held none of them; -1 when none can be left.
        """
        # a read of one record or none is at the list's end: look back
        side = side_of(jobs, search.key, self.newest_first) if len(jobs) > 1 else -1
        if side == 0 or (side > 0 and short) or (not jobs and at <= self.start_offset):
            # none of them left (this read ends the list before where they
            # would be, or nothing is left of it), or an order not by
            # created_at
            return -1
        search.newest_first = self.newest_first
        search.missed(at, jobs, side)
        return search.next_offset(limit)

    def _widen(
        self,
        at: int,
        limit: int,
        key: datetime,
        jobs: tuple[BatchJob, ...],
        ties: list[int],
        *,
        short: bool,
    ) -> Steps[tuple[int, int] | None]:
        """
        The next read for the jobs created at *key*, of which the read of
        *jobs* from *at* held some (at *ties*): wider, up to what the server
        serves, and placed so the side not seen yet gets the room, leaving a
        few records for what moves meanwhile; None once a read holds them all.
        """
        starts = ties[0] > 0 or at <= self.start_offset
        ends = ties[-1] < len(jobs) - 1 or short
        if starts and ends:
            return None
        wider = min(2 * limit, self.server_max)
        crowded = (not starts or ties[0] <= 1) and not ends  # they fill it
        self.tie_overflow = self.tie_overflow or crowded
        if wider == limit and crowded:
            # more of them than a read holds: whether their order holds
            # between reads tells if the walk's own checks suffice
            if (yield from self._reordered(at, limit, key, jobs)):
                raise self._tie_too_wide(key, limit)
            return None
        margin = max(1, (len(jobs) - (ties[-1] - ties[0] + 1)) // 4)
        if not starts and not ends:  # all of it was theirs: widen both ways
            at = max(self.start_offset, at - (wider - limit) // 2)
        elif starts:  # they go on past this read: read on from just before
            if ties[0] > 1:
                at += ties[0] - min(margin, ties[0] - 1)
        else:  # they begin before this read: read from further back
            # (a short read ends the list: what it did not fill is room too)
            end = at + min(ties[-1] + 1 + margin, len(jobs))
            at = max(self.start_offset, min(at - 1, end - wider))
        return at, wider

    def _tie_too_wide(self, key: datetime, limit: int) -> ListingMovedError:
        return ListingMovedError(
            reason=f"more jobs share one created_at ({key.isoformat()}) than "
            f"one request brings ({limit}), and the server orders them "
            "differently on every read, so no read can show every one; resuming "
            "cannot help: narrow the listing (job_type) so fewer jobs share one "
            "created_at, or raise the server's page cap",
            project_id=self.project_id,
            offset=self.resume_offset,
        )

    def _reordered(
        self, at: int, limit: int, key: datetime, jobs: tuple[BatchJob, ...]
    ) -> Steps[bool]:
        """
        Whether a second read from *at* shows the jobs created at *key* that
        *jobs* (the first read from there) holds in another order.
        """
        again = (yield from self._read(Read(at, limit))).jobs
        first = [job.job_id for job in jobs if job.created_at == key]
        second = [job.job_id for job in again if job.created_at == key]
        # jobs that came or went meanwhile do not tell the order: only the
        # ones both reads hold
        both = set(first).intersection(second)
        return [i for i in first if i in both] != [i for i in second if i in both]

    # -- records that moved past a boundary --------------------------------------

    def _reread(self, position: int, target: int) -> Steps[int]:
        """
        Re-read from the last record delivered (at *position* when last seen)
        to *target*, or to the end: where the walk is then (-1: at the end).

        Each read starts early by how far records moved back lately (deletions
        before them), further back or on after each read that holds no record
        delivered before. The number of reads is bounded: a server whose
        records never line up ends in `ListingMovedError`.
        """
        reads = 32 + 8 * math.ceil(max(target - position, 1) / max(self.stride, 1))
        state = _Relocation(reads=reads, shift=-self.drift)
        while state.reads > 0:
            state.reads -= 1
            expect = position - 1  # where the last record was
            at = max(self.start_offset, expect + state.shift)
            page = yield from self._read(Read(at, self.later_ask))
            fresh = self._relink(page.jobs, state)
            if fresh is None:
                if not page.jobs and at <= self.start_offset:
                    return -1  # nothing is left of the list
                if not self._relocate(state, at, expect, page.jobs, target):
                    break
                continue
            if state.emptied and not fresh:
                return -1  # back from an empty read, and nothing new
            self._found_again(state, at, expect)
            self.boundary.note_past(page.jobs, None)  # no record read past it
            if self.boundary.split_tie is not None:
                fresh = yield from self._mend_before(page, fresh)
            step = self._deliver(page, fresh)
            if step is not None:
                yield step
            position = page.next_offset
            if self._reread_ends(page):
                return -1
            if position >= target:
                return position
        raise self._moved("find the last one yielded")

    def _relink(self, jobs: tuple[BatchJob, ...], state: _Relocation) -> Fresh | None:
        """The new records of a re-read's *jobs*, or None if it found none known."""
        if not jobs:
            return None
        if state.starting_over:
            state.starting_over = False
            return self.boundary.start_over(jobs)
        return self.boundary.check(jobs)

    def _relocate(
        self,
        state: _Relocation,
        at: int,
        expect: int,
        jobs: tuple[BatchJob, ...],
        target: int,
    ) -> bool:
        """
        Where the next re-read goes, after the read of *jobs* from *at* held
        no record delivered; False when the walk gives up.
        """
        # an empty read right after one that lined up: the list ends before
        # here, unless deletions moved its last jobs back: look
        state.emptied = not jobs and (state.linked or state.emptied)
        state.linked = False
        last = self.boundary.last
        if last is None:  # nothing was delivered: nothing to look for
            return False
        if state.search is None:
            state.search = Search(
                last.created_at,
                origin=expect,
                first=self.start_offset,
                newest_first=None,
                unit=2,
            )
        search = state.search
        search.newest_first = self.newest_first
        search.origin = expect
        side = search.side(jobs)
        search.missed(at, jobs, side)
        if search.misses > _MISSES_MAX or search.above == self.start_offset:
            if state.restarted or not self.boundary.knows(self.delivered):
                return False
            # every job delivered is still known: start over, skip those
            state.starting_over = state.restarted = True
            state.search = None
            state.shift = self.start_offset - expect
            state.reads += 8 + math.ceil(target / max(self.stride, 1))
            return True
        state.shift = search.next_offset(self.later_ask) - expect
        return True

    def _found_again(self, state: _Relocation, at: int, expect: int) -> None:
        """
        A re-read from *at* found the last record (expected at *expect*): how
        far it moved back, and where the next re-read starts (that much
        earlier, and twice that, leaving room for new records).
        """
        index = self.boundary.last_index
        moved = -state.shift if index is None else expect - at - index
        if not state.linked:
            self.drift = moved  # a first find: how far it had gone
        state.shift = -max(min(2 * moved, (self.later_ask - 1) // 2), 0)
        state.linked = True
        state.emptied = False
        state.search = None
