from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ief_jobs
from ief_jobs import (
    BatchJob,
    JobPage,
    JobStatus,
    JobType,
    ListingMovedError,
    Progress,
    ServerError,
)
from ief_jobs.fanout import merge_walks
from ief_jobs.listing import PageBudget
from ief_jobs.models import ListQuery
from ief_jobs.pagination import FetchPage, walk_pages

_T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _job(index: int) -> BatchJob:
    created = _T0 - timedelta(seconds=index)  # newest first, as the server sorts
    return BatchJob(
        job_id=f"job-{index}",
        job_name=f"name-{index}",
        job_type=JobType.NODE_UPGRADE,
        created_at=created,
        status=JobStatus.SUCCESSFUL,
        task_total_count=1,
        task_success_count=1,
        task_failed_count=0,
        status_last_updated_at=created,
        description="",
    )


class FakeServer:
    """A sans-I/O list endpoint: *total* jobs, a page cap, a record of requests."""

    def __init__(self, total: int, cap: int | None = None, delay: float = 0.0) -> None:
        self.jobs = [_job(i) for i in range(total)]
        self.cap = cap
        self.delay = delay
        self.requests: list[tuple[int, int]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def fetch(self, offset: int, limit: int) -> JobPage:
        self.requests.append((offset, limit))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        size = limit if self.cap is None else min(limit, self.cap)
        return JobPage(
            project_id="p",
            offset=offset,
            job_count=len(self.jobs),
            jobs=tuple(self.jobs[offset : offset + size]),
        )


def _walk_pages(
    fetch: FetchPage,
    *,
    window: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
    **query: Any,
) -> AsyncGenerator[JobPage, None]:
    return walk_pages(
        fetch,
        ListQuery(**query),
        project_id="p",
        window=window,
        on_progress=on_progress,
    )


async def _walk(server: FakeServer, **kwargs: Any) -> list[JobPage]:
    return [p async for p in _walk_pages(server.fetch, **kwargs)]


def _fewest(
    total: int, cap: int, size: int, offset: int, max_items: int | None, window: int
) -> tuple[int, int]:
    """
    The fewest requests a listing needs (as a range: at least, at most).

    The first request brings what it can; each later one starts one record
    early and peeks one past its end, so it brings two records fewer than the
    server gives (IEF gives at most 1000). A cap the first page shows costs
    one read of the first boundary, which no peek saw; a cap the first page
    does not show costs at most one more request and one such read per page
    in flight when a later page shows it.
    """
    want = math.inf if max_items is None else max_items
    if want == 0:
        return 0, 0
    wanted = min(max(total - offset, 0), want)
    size = min(size, 998)
    first = min(size, want)
    got = min(first, cap, wanted)
    if wanted <= got:
        return 1, 1
    most = min(cap, 1000)
    stride = min(size, most - 2)
    fewest = 1 + math.ceil((wanted - got) / stride)
    if cap < first:  # the first page shows the cap, not the next boundary
        return fewest, fewest + 1
    late = cap < size + 2
    return fewest, fewest + (2 * window + 1 if late else 0)


class TestWalk:
    @given(
        total=st.integers(0, 2000),
        cap=st.integers(3, 500),
        size=st.integers(1, 1000),
        offset=st.integers(0, 2100),
        max_items=st.none() | st.integers(0, 2100),
        window=st.integers(1, 40),
    )
    async def test_every_job_exactly_once(
        self,
        total: int,
        cap: int,
        size: int,
        offset: int,
        max_items: int | None,
        window: int,
    ) -> None:
        """Whatever the cap, page size, offset and max_items: each record once, in
        order, with the fewest requests, none past the end."""
        server = FakeServer(total, cap)

        pages = await _walk(
            server, offset=offset, page_size=size, max_items=max_items, window=window
        )

        stop = total if max_items is None else min(total, offset + max_items)
        expected = server.jobs[offset:stop]
        assert expected == [j for p in pages for j in p.jobs]
        low, high = _fewest(total, cap, size, offset, max_items, window)
        assert low <= len(server.requests) <= high
        assert all(o <= max(total, offset) for o, _ in server.requests)
        if max_items is not None:  # fetches no record it will not yield...
            fetched = sum(min(limit, cap) for _, limit in server.requests)
            # ...but the one each later page starts with and the one past each
            # page, to check the boundary, and the reads of a boundary no such
            # record was read past (a cap met late)
            extra = len(server.requests) - low
            assert fetched <= max_items + 2 * len(server.requests) + cap * extra

    @pytest.mark.parametrize("cap", [1, 2])
    @pytest.mark.parametrize("window", [1, 8])
    async def test_a_server_too_stingy_to_check_raises(
        self, cap: int, window: int
    ) -> None:
        """A server that serves one or two records a request leaves no room for
        the last record yielded, a new one and one past it: after the first
        page the walk says it cannot check the boundaries, never lists on
        unchecked; and a listing the first page holds whole is fine."""
        pages: list[JobPage] = []
        with pytest.raises(ListingMovedError, match="too few to check") as info:
            async for page in _walk_pages(
                FakeServer(10, cap).fetch, page_size=5, window=window
            ):
                pages.append(page)  # noqa: PERF401 (kept when it raises)

        assert [cap] == [len(p.jobs) for p in pages]
        assert cap == info.value.offset
        whole = await _walk(FakeServer(cap, cap), page_size=5)
        assert cap == sum(len(p.jobs) for p in whole)

    async def test_resuming_a_stingy_server_cannot_help(self) -> None:
        """Against a server capping pages at two records, ListingMovedError says
        that resuming cannot help and what must change; and indeed resuming
        from exc.offset raises again after one more page, every time."""
        server = FakeServer(10, cap=2)
        with pytest.raises(ListingMovedError) as info:
            await _walk(server, page_size=5)
        assert "resuming cannot help" in str(info.value)
        assert "serve at least 3 records a request" in str(info.value)

        with pytest.raises(ListingMovedError) as again:
            await _walk(server, page_size=5, offset=info.value.offset)
        assert info.value.offset + 2 == again.value.offset

    @pytest.mark.parametrize("window", [1, 8])
    async def test_no_request_asks_over_a_thousand(self, window: int) -> None:
        """No request asks for a limit over IEF's 1,000, the peek included,
        even for a query built past its checks with a larger page_size."""
        server = FakeServer(5000)
        query = ListQuery(page_size=1000)
        object.__setattr__(query, "page_size", 1001)  # past the argument checks

        pages = [
            p
            async for p in walk_pages(
                server.fetch, query, project_id="p", window=window
            )
        ]

        assert server.jobs == [j for p in pages for j in p.jobs]
        assert 1000 == max(limit for _, limit in server.requests)

    async def test_a_shared_budget_bounds_what_stalled_walks_hold(self) -> None:
        """Walks sharing a PageBudget of 4 pages, each with a window of 8, the
        consumer stalled after one page: they send at most the budget, one
        read per walk and the merge's queue (2) ahead, not a window each."""
        servers = {pid: FakeServer(1000) for pid in ("a", "b", "c", "d")}
        budget = PageBudget(4)

        def walk(project_id: str) -> AsyncGenerator[JobPage, None]:
            query = ListQuery(page_size=10)
            fetch = servers[project_id].fetch
            return walk_pages(
                fetch, query, project_id=project_id, window=8, budget=budget
            )

        pages = merge_walks(list(servers), walk, buffer=2, active=4)
        async with contextlib.aclosing(pages):
            await anext(pages)
            for _ in range(200):  # every walk runs until it blocks
                await asyncio.sleep(0)
            sent = sum(len(server.requests) for server in servers.values())
            rest = sum([len(page.jobs) async for page in pages])

        assert sent <= 4 + len(servers) + 2 + 1
        assert 0 == budget.held
        assert 4000 - 10 == rest

    async def test_resume_from_next_offset(self) -> None:
        """A listing resumed at page.next_offset continues exactly."""
        server = FakeServer(250)
        first = await _walk(server, page_size=100, max_items=130)
        resume = first[-1].next_offset

        rest = await _walk(server, page_size=100, offset=resume)

        assert server.jobs == [j for p in first + rest for j in p.jobs]

    async def test_pages_in_flight_are_bounded_and_ordered(self) -> None:
        """Later pages are fetched concurrently, within the window, yielded in order."""
        server = FakeServer(1000, delay=0.001)

        pages = await _walk(server, page_size=10, window=8)

        assert 8 == server.max_in_flight
        assert [p.offset for p in pages] == list(range(0, 1000, 10))

    @pytest.mark.parametrize("window", [1, 4])
    @pytest.mark.parametrize("empty_from", [29, 30])
    async def test_empty_page_before_the_end_stops(
        self, window: int, empty_from: int
    ) -> None:
        """Pages that come back empty, or with nothing new, before job_count says
        the end is (jobs deleted) end the walk instead of looping."""
        server = FakeServer(100)

        async def shrinking(offset: int, limit: int) -> JobPage:
            page = await server.fetch(offset, limit)
            if offset >= empty_from:
                return attrs.evolve(page, jobs=())
            return attrs.evolve(page, jobs=page.jobs[: max(30 - offset, 0)])

        pages = [p async for p in _walk_pages(shrinking, page_size=10, window=window)]

        assert server.jobs[:30] == [j for p in pages for j in p.jobs]
        # a short page may be a cap: its boundary, which no peek saw, is read
        assert len(server.requests) <= 30 // 10 + 2 * window + 5

    async def test_more_records_than_asked_are_trimmed(self) -> None:
        """A server that sends more than limit yields no more than limit, nor twice."""
        server = FakeServer(50)

        async def generous(offset: int, limit: int) -> JobPage:
            return await server.fetch(offset, limit + 5)

        pages = [p async for p in _walk_pages(generous, page_size=10, max_items=25)]

        assert server.jobs[:25] == [j for p in pages for j in p.jobs]

    @pytest.mark.parametrize("window", [1, 4])
    async def test_an_error_names_where_to_resume(self, window: int) -> None:
        """A later page is asked from one record before its start; an error on it
        still names the offset to resume from, the last page's next_offset."""
        server = FakeServer(100)

        async def failing(offset: int, limit: int) -> JobPage:
            if offset + limit > 21:  # the third page (the second peeks at 20)
                raise ServerError(status=503, project_id="p", offset=offset)
            return await server.fetch(offset, limit)

        pages: list[JobPage] = []
        with pytest.raises(ServerError) as info:
            async for page in _walk_pages(failing, page_size=10, window=window):
                pages.append(page)  # noqa: PERF401 (kept when it raises)

        assert 20 == pages[-1].next_offset == info.value.offset

    async def test_break_cancels_pages_in_flight(self) -> None:
        """Closing the walk early cancels the prefetched pages at once."""
        server = FakeServer(1000, delay=0.05)
        walk = _walk_pages(server.fetch, page_size=10, window=8)

        first = await anext(walk)
        await anext(walk)  # the window is now in flight
        await walk.aclose()

        assert 10 == len(first.jobs)
        assert 0 == server.in_flight
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert [] == pending

    async def test_progress_reports_total_and_delivered(self) -> None:
        """on_progress hears the total and the running count after each page."""
        seen: list[Progress] = []
        server = FakeServer(25)

        await _walk(server, page_size=10, on_progress=seen.append)

        assert [(25, 10), (25, 20), (25, 25)] == [
            (p.job_count, p.delivered) for p in seen
        ]


class TestDrift:
    async def test_creations_never_yield_a_job_twice(self) -> None:
        """Jobs created at the front while listing shift records; none comes twice."""
        server = FakeServer(100)
        created = 0

        async def growing(offset: int, limit: int) -> JobPage:
            nonlocal created
            created += 1
            server.jobs.insert(0, _job(-created))  # a newer job at the front
            return await server.fetch(offset, limit)

        with pytest.warns(UserWarning, match="job_count"):
            jobs = [
                j
                for p in [p async for p in _walk_pages(growing, page_size=10)]
                for j in p.jobs
            ]

        ids = [j.job_id for j in jobs]
        assert len(ids) == len(set(ids))
        assert {f"job-{i}" for i in range(100)} <= set(ids)

    async def test_deletions_never_skip_a_job(self) -> None:
        """Jobs deleted from pages already read shift records back; none is skipped."""
        server = FakeServer(100)
        deleted: set[str] = set()

        async def shrinking(offset: int, limit: int) -> JobPage:
            if offset and len(server.jobs) > 60:
                gone = server.jobs.pop(offset // 2)  # a job already listed
                deleted.add(gone.job_id)
            return await server.fetch(offset, limit)

        with pytest.warns(UserWarning, match="job_count"):
            jobs = [
                j
                for p in [p async for p in _walk_pages(shrinking, page_size=10)]
                for j in p.jobs
            ]

        ids = [j.job_id for j in jobs]
        assert len(ids) == len(set(ids))
        survivors = {j.job_id for j in server.jobs}
        assert survivors <= set(ids)


def test_the_fetch_type_is_written_once() -> None:
    """``listing.FetchPage`` is the one spelling of the fetch callable's type."""
    src = Path(ief_jobs.__file__).parent
    spelled = [
        path.relative_to(src).as_posix()
        for path in sorted(src.rglob("*.py"))
        if "Callable[[int, int]" in path.read_text()
    ]

    assert ["listing/driver.py"] == spelled


async def test_an_unbuilt_answer_is_built_when_the_walk_reaches_it() -> None:
    """A fetch may answer with an `Unbuilt` page: the walk builds each one
    when it collects it, in order, and not the reads it sent ahead."""
    server = FakeServer(40)
    built: list[int] = []

    @attrs.define
    class Later:
        page: JobPage

        def build(self) -> JobPage:
            built.append(self.page.offset)
            return self.page

    async def read(offset: int, limit: int) -> Later:
        return Later(await server.fetch(offset, limit))

    delivered = []
    async for page in walk_pages(
        read, ListQuery(page_size=5), project_id="p", window=4
    ):
        delivered.append(page)
        assert len(delivered) == len(built)  # the reads ahead wait unbuilt
        await asyncio.sleep(0)  # they arrive meanwhile

    assert [offset for offset, _ in server.requests] == built
    assert 40 == sum(len(p.jobs) for p in delivered)
    assert 8 == len(built)  # 5 records, then 5 new a read
