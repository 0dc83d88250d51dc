"""
The page walk for one project, as a function of a ``fetch_page(offset, limit)``
callable: no HTTP here, so property tests drive it with a fake server.

The walk:

* asks for the first page, learns ``job_count`` (and the server's real page size,
  if it caps ``limit``), then keeps up to *window* later pages in flight while
  yielding pages strictly in order;
* advances by ``offset + len(jobs)``, never ``offset + limit``, and fills in any
  short page instead of skipping past it;
* with *max_items*, shrinks the last request so it fetches no record it will not
  yield; never asks for a page past the end;
* stops, rather than loops, when a page comes back empty early (jobs deleted);
* never yields a job twice, even when jobs created meanwhile shift records into
  pages already read: it remembers the sort key it has reached and the ids at
  that key, not every id;
* once ``job_count`` has changed (jobs come and go), checks every later page
  boundary, and an early end, by re-reading from before it, backwards until it
  meets a job already yielded: deletions may have shifted records into pages
  already read, and with pages in flight at once each page saw the list at a
  different moment. The re-read's own pages overlap by one record so they
  cannot skip either. A job that existed for the whole walk is not skipped.
  (Only churn the count cannot show escapes this: as many jobs created as
  deleted between every two reads, with ``created_at:asc``, can hide a job.)
* reports a changed ``job_count`` as `JobCountChanged`, a warning, so a caller
  can learn it (``warnings.catch_warnings``) or turn it into an error.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from datetime import datetime

import attrs

from .models import BatchJob, JobPage, ListQuery, Progress, SortOrder

__all__ = ["FetchPage", "JobCountChanged", "walk_pages"]

FetchPage = Callable[[int, int], Awaitable[JobPage]]
"""``fetch_page(offset, limit) -> JobPage``: one request of the listing."""


class JobCountChanged(UserWarning):
    """``job_count`` changed during a walk: jobs were created or deleted meanwhile."""


class _Seen:
    """
    What a walk must remember to never yield a job twice.

    Records come sorted by ``created_at``; a record at or before the key reached
    so far was yielded already, unless it ties the key and its id is new.
    """

    __slots__ = ("descending", "ids_at_key", "key")

    def __init__(self, descending: bool | None) -> None:
        self.descending = descending  # None: not known yet (no sort was asked for)
        self.key: datetime | None = None
        self.ids_at_key: set[str] = set()

    def is_seen(self, job: BatchJob) -> bool:
        """Whether *job* is at or behind the key reached (yielded already)."""
        if self.key is None or self.descending is None:
            return False
        if job.created_at == self.key:
            return job.job_id in self.ids_at_key
        return (job.created_at < self.key) != self.descending

    def not_after(self, job: BatchJob, other: BatchJob) -> bool:
        """Whether *job* sorts before *other*, or ties with it."""
        if self.descending is None:
            return True
        if self.descending:
            return job.created_at >= other.created_at
        return job.created_at <= other.created_at

    def fresh(self, jobs: Iterable[BatchJob]) -> list[BatchJob]:
        out: list[BatchJob] = []
        for job in jobs:
            if self.key is not None:
                if job.created_at == self.key:
                    if job.job_id in self.ids_at_key:
                        continue
                else:
                    if self.descending is None:
                        self.descending = job.created_at < self.key
                    if (job.created_at < self.key) != self.descending:
                        continue  # behind the key: seen already, or out of order
                    self.ids_at_key.clear()
            self.key = job.created_at
            self.ids_at_key.add(job.job_id)
            out.append(job)
        return out


def _trim(page: JobPage, limit: int) -> JobPage:
    # a server that sends more than asked for gets no more room than it was given
    if len(page.jobs) > limit:
        return attrs.evolve(page, jobs=page.jobs[:limit])
    return page


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
    resume.

    Example::

        query = ListQuery(page_size=50)
        async for page in walk_pages(fetch, query, project_id="p1", window=8):
            handle(page.jobs)
    """
    offset, page_size, max_items = query.offset, query.page_size, query.max_items
    sort = query.sort
    want = math.inf if max_items is None else max_items
    if want <= 0:
        return
    seen = _Seen(None if sort is None else sort == SortOrder.CREATED_AT_DESC)
    delivered = 0

    def deliver(page: JobPage, raw_end: int) -> JobPage:
        nonlocal delivered
        fresh = seen.fresh(page.jobs)
        # duplicates are a prefix: resume points stay exact positions
        start = raw_end - len(fresh)
        fresh = fresh[: int(min(len(fresh), want - delivered))]
        delivered += len(fresh)
        if on_progress is not None:
            target = int(min(max(page.job_count - offset, 0), want))
            on_progress(Progress(project_id, page.job_count, delivered, target))
        return JobPage(
            project_id=page.project_id,
            offset=start,
            job_count=page.job_count,
            jobs=tuple(fresh),
            request_id=page.request_id,
        )

    first_limit = int(min(page_size, want))
    page = _trim(await fetch_page(offset, first_limit), first_limit)
    position, count = page.next_offset, page.job_count
    yield deliver(page, position)
    if not page.jobs:
        return
    size = page_size
    if len(page.jobs) < first_limit and position < min(count, offset + want):
        size = len(page.jobs)  # the server caps limit: plan with what it gives

    pending: deque[tuple[int, int, asyncio.Task[JobPage]]] = deque()
    scheduled = position
    drifted = False  # job_count has changed: records may move between pages
    try:
        while delivered < want and position < count:
            horizon = int(min(count, position + (want - delivered)))
            scheduled = max(scheduled, position)
            while len(pending) < window and scheduled < horizon:
                # only max_items shrinks a request: a full last page also takes in
                # records that creations pushed past the end meanwhile
                limit = size if max_items is None else min(size, horizon - scheduled)
                task = asyncio.ensure_future(fetch_page(scheduled, limit))
                pending.append((scheduled, limit, task))
                scheduled += limit
            if not pending:
                break
            page_offset, limit, task = pending.popleft()
            page = _trim(await task, limit)
            if page.job_count != count:
                warnings.warn(
                    f"job_count of project {project_id} changed from {count} to "
                    f"{page.job_count} at offset {page_offset}",
                    JobCountChanged,
                    stacklevel=2,
                )
                drifted = True
            if drifted:
                # Deletions may have shifted records into what was read already.
                # Pages in flight at once saw the list at different moments, so
                # once it has moved every later boundary is checked, and an early
                # end is read up to the real one.
                head = page.jobs[0] if page.jobs else None
                missed = await _reread(
                    fetch_page,
                    seen,
                    first=offset,
                    stop=page_offset,
                    back=max(abs(count - page.job_count), 1),
                    size=size,
                    until=head,
                )
                if head is not None:  # what sorts from head on comes with the page
                    missed = [j for j in missed if seen.not_after(j, head)]
                if missed:
                    yield deliver(
                        attrs.evolve(page, offset=page_offset, jobs=tuple(missed)),
                        page_offset,
                    )
                    if delivered >= want:
                        return
            if not page.jobs:
                break  # jobs were deleted meanwhile: the end came early
            count = page.job_count
            position = page.next_offset
            if position < page_offset + limit and position < count:
                # a short page: fetch the rest of its range before the next one
                gap = min(size, page_offset + limit - position)
                size = min(size, len(page.jobs))
                pending.appendleft(
                    (position, gap, asyncio.ensure_future(fetch_page(position, gap)))
                )
            yield deliver(page, position)
    finally:
        await _cancel_all(task for _, _, task in pending)


async def _reread(
    fetch_page: FetchPage,
    seen: _Seen,
    *,
    first: int,
    stop: int,
    back: int,
    size: int,
    until: BatchJob | None,
) -> list[BatchJob]:
    """
    Re-read the records between the last one yielded and *until*.

    Starts *back* records before *stop* (what ``job_count`` changed by) and reads
    on until it meets or passes *until* (the page's first record, which may have
    moved on since), or to the end of the list when *until* is None. Records
    keep moving while it reads, so every page it reads must overlap what came
    before: its first record must be one already yielded or re-read. A page
    that starts past that (deletions shifted records into the gap) is read
    again from further back, twice as far each time. The overlap costs one
    record a page, and only while jobs come and go.
    """
    local = _Seen(seen.descending)  # what the re-read holds, on top of the walk's
    local.key, local.ids_at_key = seen.key, set(seen.ids_at_key)
    jobs: list[BatchJob] = []
    position, step = max(first, stop - back), max(back, 1)
    # a server whose records never line up must not keep us here for ever
    budget = 8 + 4 * math.ceil((stop - first + back) / max(size - 1, 1))
    while budget > 0:
        budget -= 1
        page = _trim(await fetch_page(position, size), size)
        if position > first and (not page.jobs or not local.is_seen(page.jobs[0])):
            # a gap, or the list shrank past us: what we look for is further back
            position, step = max(first, position - step), step * 2
            continue
        jobs.extend(local.fresh(page.jobs))
        if len(page.jobs) < size:
            break  # the end of the list
        last = page.jobs[-1]
        if until is not None and (not seen.not_after(last, until) or last == until):
            break  # reached the page this re-read is for
        # overlap by one record, so the next page shows whether records moved
        position = page.next_offset - 1 if len(page.jobs) > 1 else page.next_offset
    return jobs


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
