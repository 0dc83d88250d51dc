"""
The async driver: makes the reads a `Cursor` asks for and yields its pages.

It owns what the cursor does not: tasks, cancellation, the client-wide
`PageBudget`, warnings and logging. Reads sent ahead run as tasks; every other
read is awaited at once, so a walk keeps at most *window* reads in flight.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Final, Protocol, TypeAlias, TypeVar

from ief_jobs.errors import IefError
from ief_jobs.models import JobPage, ListQuery, Progress

from .cursor import Cursor
from .steps import Collect, Deliver, Drop, Notice, Read, Start, Step

__all__ = ["FetchOf", "FetchPage", "PageBudget", "ReadPage", "Unbuilt", "walk_pages"]

P = TypeVar("P")

FetchOf: TypeAlias = Callable[[int, int], Awaitable[P]]
"""``fetch(offset, limit) -> P``: one request of the listing, its answer a *P*."""

FetchPage: TypeAlias = FetchOf[JobPage]
"""``fetch_page(offset, limit) -> JobPage``: one request of the listing."""


class Unbuilt(Protocol):
    """A page decoded and checked whose records are built by `build`."""

    def build(self) -> JobPage:
        """The page, its records built now."""
        ...  # pragma: no cover (a protocol)


ReadPage: TypeAlias = FetchOf[JobPage | Unbuilt]
"""
A `FetchPage` that may answer with an `Unbuilt` page: the walk builds it when
it reaches it, in order (``Transport.page_reader``).
"""

_log: Final = logging.getLogger("ief_jobs")


class PageBudget:
    """
    How many pages the walks of one client may hold at once: sent and not yet
    handed on (in flight, or fetched and waiting for the consumer).

    A walk sends a read ahead only while the budget has room; the one read a
    walk needs to go on at all (its first, the next in order when none is in
    flight, a re-read) is always allowed, so no walk waits for another's
    consumer. So with every consumer stalled, the walks of a client hold at
    most *limit* pages plus one per walk; ``None`` is no bound.

    Example::

        budget = PageBudget(64)  # one per client, shared by all its walks
        walk_pages(fetch, query, project_id="p1", window=32, budget=budget)
    """

    __slots__ = ("held", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.held = 0

    def take(self, *, optional: bool) -> bool:
        """Hold one page more; an *optional* one only if there is room."""
        if optional and self.limit is not None and self.held >= self.limit:
            return False
        self.held += 1
        return True

    def give_back(self, pages: int) -> None:
        """Release *pages* held."""
        self.held -= pages


class _Reads:
    """One walk's reads: those in flight, and what they hold of the budget."""

    __slots__ = ("budget", "fetch_page", "held", "in_flight", "spent")

    def __init__(self, fetch_page: ReadPage, budget: PageBudget) -> None:
        self.fetch_page = fetch_page
        self.budget = budget
        self.in_flight: dict[Read, asyncio.Future[JobPage | Unbuilt]] = {}
        self.held = 0  # budget taken by this walk
        self.spent = 0  # of which for pages handed on or about to be

    def start(self, step: Start) -> bool:
        if not self.budget.take(optional=step.optional):
            return False
        self.held += 1
        read = step.read
        self.in_flight[read] = asyncio.ensure_future(
            self.fetch_page(read.offset, read.limit)
        )
        return True

    async def collect(self, read: Read) -> JobPage:
        answer = self.in_flight.pop(read, None)
        if answer is None:  # a read the cursor needs at once: awaited directly
            self.budget.take(optional=False)
            self.held += 1
            page = await self.fetch_page(read.offset, read.limit)
        else:
            page = await answer
        self.spent += 1
        return page if isinstance(page, JobPage) else page.build()

    def release_spent(self) -> None:
        """The consumer took what the collected reads brought: free their room."""
        self.budget.give_back(self.spent)
        self.held -= self.spent
        self.spent = 0

    async def drop(self, reads: Iterable[Read]) -> None:
        dropped = [self.in_flight.pop(read) for read in reads]
        self.budget.give_back(len(dropped))
        self.held -= len(dropped)
        await _cancel_all(dropped)

    async def close(self) -> None:
        try:
            await _cancel_all(self.in_flight.values())
        finally:
            self.in_flight.clear()
            self.budget.give_back(self.held)
            self.held = self.spent = 0


async def walk_pages(
    fetch_page: FetchPage | ReadPage,
    query: ListQuery,
    *,
    project_id: str,
    window: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
    budget: PageBudget | None = None,
) -> AsyncGenerator[JobPage, None]:
    """
    Yield the pages of one listing in order, fetching up to *window* at once.

    *query* gives where to start (``offset``), how much to ask for per request
    (``page_size``), how much to yield at most (``max_items``) and the order
    asked for (``sort``); *fetch_page* sends the rest of it. Each yielded page
    holds only records not yielded before, and its ``next_offset`` is where to
    resume. A job that exists for the whole walk is yielded exactly once, jobs
    created or deleted meanwhile at most once; the records are yielded in the
    order the server sent them. *budget*, shared by a client's walks, bounds
    the pages they hold when consumers stall. *fetch_page* may answer with an
    `Unbuilt` page: it is built when the walk reaches it.

    Example::

        query = ListQuery(page_size=50)
        async for page in walk_pages(fetch, query, project_id="p1", window=8):
            handle(page.jobs)

    Raises:
        ListingMovedError: Records moved so far that the walk lost its place,
            or the server leaves no way to check that none was skipped.
    """
    cursor = Cursor(
        query,
        project_id=project_id,
        window=window,
        report_progress=on_progress is not None,
    )
    reads = _Reads(fetch_page, PageBudget(None) if budget is None else budget)
    try:
        step: Step | None = cursor.advance()
        while step is not None:
            if isinstance(step, Deliver):
                if on_progress is not None and step.progress is not None:
                    on_progress(step.progress)
                yield step.page
                step = cursor.advance()
                continue
            reads.release_spent()
            if isinstance(step, Collect):
                try:
                    page = await reads.collect(step.read)
                except IefError as exc:
                    exc.offset = cursor.resume_offset  # not where the read began
                    raise
                step = cursor.advance(page)
            elif isinstance(step, Start):
                step = cursor.advance(reads.start(step))
            elif isinstance(step, Drop):
                await reads.drop(step.reads)
                step = cursor.advance()
            else:
                _notify(step, project_id)
                step = cursor.advance()
    finally:
        await reads.close()


def _notify(notice: Notice, project_id: str) -> None:
    # stacklevel 3: the consumer's `async for`, past this and the generator
    warnings.warn(notice.text, notice.category, stacklevel=3)
    _log.info(notice.detail, project_id, *notice.args)


async def _cancel_all(tasks: Iterable[asyncio.Future[JobPage | Unbuilt]]) -> None:
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
