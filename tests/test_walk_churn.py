"""
The walk against fake servers whose jobs come and go while it lists (issue 13).

The churn property runs ``IEF_JOBS_CHURN_SEEDS`` seeds of each case (3 in CI);
``IEF_JOBS_CHURN_SEEDS=20 python -m pytest tests/test_walk_churn.py`` is the
thorough run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import warnings
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ief_jobs import BatchJob, JobCountChanged, JobPage
from ief_jobs.models import ListQuery, SortOrder
from ief_jobs.pagination import JobCountStale, ListingMovedError, walk_pages
from test_pagination import _job as _listed_job

_T0 = datetime(2024, 1, 1, tzinfo=UTC)
_SEEDS = int(os.environ.get("IEF_JOBS_CHURN_SEEDS", "3"))
_Test = TypeVar("_Test", bound=Callable[..., Awaitable[None]])


def _every_seed_window_and_order(test: _Test) -> _Test:
    """Run *test* for every seed, with 1 and 32 pages in flight, in both orders."""
    orders = pytest.mark.parametrize("descending", [True, False], ids=["desc", "asc"])
    windows = pytest.mark.parametrize("window", [1, 32])
    seeds = pytest.mark.parametrize("seed", range(_SEEDS))
    return seeds(windows(orders(test)))


def _job(serial: int, *, second: int | None = None) -> BatchJob:
    created = _T0 + timedelta(seconds=serial if second is None else second)
    return attrs.evolve(
        _listed_job(serial), created_at=created, status_last_updated_at=created
    )


class ChurnServer:
    """
    A list endpoint whose jobs come and go: before every answer it creates
    *creates* jobs (newer than all) and deletes *deletes* drawn at random, the
    way a project with a retention policy churns. Answers come back in a
    seeded, shuffled order when several are in flight.
    """

    def __init__(
        self,
        total: int,
        *,
        creates: int = 0,
        deletes: int = 0,
        descending: bool = True,
        seed: int = 0,
        cap: int | None = None,
        tie_every: int = 1,
        scattered: bool = False,
        churning: int = 10**9,
        steady_ties: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.tie_every = tie_every  # this many jobs share each created_at
        self.steady_ties = steady_ties  # ties keep one order (else shuffled)
        self.scattered = scattered
        self.churning = churning  # requests that churn: a list growing at the
        # end faster than a walk reads it never ends, whatever the walk does
        self.jobs = [self._make(i) for i in range(total)]  # oldest first
        self.serial = total
        self.creates, self.deletes = creates, deletes
        self.descending = descending
        self.cap = cap
        self.requests: list[tuple[int, int]] = []

    def _make(self, serial: int) -> BatchJob:
        return _job(serial, second=serial // self.tie_every)

    def ids(self) -> set[str]:
        return {j.job_id for j in self.jobs}

    def view(self) -> list[BatchJob]:
        """The list as one read sees it; ties come in any order."""
        jobs = self.jobs
        if self.scattered:  # an order not by created_at: new jobs land anywhere
            return sorted(jobs, key=lambda j: zlib.crc32(j.job_id.encode()))
        if self.tie_every > 1 and not self.steady_ties:
            jobs = sorted(jobs, key=lambda j: (j.created_at, self.rng.random()))
        return jobs[::-1] if self.descending else list(jobs)

    async def fetch(self, offset: int, limit: int) -> JobPage:
        self.requests.append((offset, limit))
        for _ in range(self.rng.randrange(4)):
            await asyncio.sleep(0)  # answers overtake one another
        if len(self.requests) <= self.churning:
            for _ in range(self.creates):
                self.jobs.append(self._make(self.serial))
                self.serial += 1
            for _ in range(min(self.deletes, len(self.jobs))):
                self.jobs.pop(self.rng.randrange(len(self.jobs)))
        view = self.view()
        size = limit if self.cap is None else min(limit, self.cap)
        return JobPage(
            project_id="p",
            offset=offset,
            job_count=len(view),
            jobs=tuple(view[offset : offset + size]),
        )


async def _listing(fetch: object, *, window: int = 1, **query: object) -> list[str]:
    pages = walk_pages(
        fetch,  # type: ignore[arg-type]
        ListQuery(**query),  # type: ignore[arg-type]
        project_id="p",
        window=window,
    )
    return [j.job_id async for page in pages for j in page.jobs]


def _assert_exact(server: ChurnServer, before: set[str], ids: list[str]) -> None:
    """Every job that lived through the walk once, any other at most once."""
    assert len(ids) == len(set(ids)), "a job was yielded twice"
    missed = (before & server.ids()) - set(ids)
    assert not missed, f"{len(missed)} survivors skipped"


class TestChurn:
    @_every_seed_window_and_order
    @pytest.mark.parametrize(
        ("creates", "deletes"), [(1, 1), (3, 3), (5, 5), (0, 3), (3, 1)]
    )
    @pytest.mark.filterwarnings("ignore::ief_jobs.JobCountChanged")
    async def test_no_survivor_skipped_none_twice(
        self, creates: int, deletes: int, descending: bool, window: int, seed: int
    ) -> None:
        """Jobs created at the head and deleted at random before every answer,
        as many as each other (the count never moves) or not, pages in flight or
        not: every job that lived through the walk comes exactly once."""
        server = ChurnServer(
            800, creates=creates, deletes=deletes, descending=descending, seed=seed
        )
        before = server.ids()

        ids = await _listing(server.fetch, window=window, page_size=50)

        _assert_exact(server, before, ids)

    @_every_seed_window_and_order
    @pytest.mark.parametrize("tie_every", [1, 3])
    @pytest.mark.parametrize("cap", [3, 7, 50])
    @pytest.mark.filterwarnings("ignore::ief_jobs.JobCountChanged")
    async def test_a_capped_server_under_churn(
        self, cap: int, tie_every: int, descending: bool, window: int, seed: int
    ) -> None:
        """A server that serves fewer records than asked, even page_size itself,
        skips nothing under churn either, jobs sharing a created_at included:
        later requests fit the record before, the new ones and the peek in
        what it serves. With a few records a page and jobs changing as fast,
        records can move further between two reads than a page reaches: then
        the walk says so (ListingMovedError), never skips."""
        server = ChurnServer(
            300,
            creates=1,
            deletes=1,
            descending=descending,
            seed=seed,
            cap=cap,
            tie_every=tie_every,
            churning=300,
        )
        before = server.ids()

        try:
            ids = await _listing(server.fetch, window=window, page_size=100)
        except ListingMovedError:
            assert cap < 50
        else:
            _assert_exact(server, before, ids)

    @pytest.mark.filterwarnings("ignore::ief_jobs.JobCountChanged")
    async def test_the_smallest_tie_that_hid_a_job(self) -> None:
        """Four jobs, two to a created_at, two a page, one deleted before each
        answer: the pair the boundary splits comes back in another order, and
        the one not yielded yet sits before the boundary now. Two requests hid
        it; the peek past the first page shows the split pair."""
        server = ChurnServer(4, deletes=1, tie_every=2, seed=6)
        before = server.ids()

        ids = await _listing(server.fetch, page_size=2)

        _assert_exact(server, before, ids)

    @_every_seed_window_and_order
    @pytest.mark.parametrize("cap", [1, 2])
    @pytest.mark.filterwarnings("ignore::ief_jobs.JobCountChanged")
    async def test_one_or_two_records_a_page_under_balanced_churn(
        self, cap: int, descending: bool, window: int, seed: int
    ) -> None:
        """One or two records a request leave no room to check a boundary (the
        last record yielded, a new one, one past it), and as many creations as
        deletions leave the count and every read alike: such a walk skipped a
        job in half the seeds. Now it says it cannot check, after the first
        page, whatever the churn."""
        server = ChurnServer(
            60,
            creates=1,
            deletes=1,
            descending=descending,
            seed=seed,
            cap=cap,
            churning=200,
        )

        with pytest.raises(ListingMovedError, match="too few to check"):
            await _listing(server.fetch, window=window, page_size=10)

    @_every_seed_window_and_order
    @pytest.mark.parametrize(("creates", "deletes"), [(0, 0), (1, 1), (0, 1), (1, 0)])
    @pytest.mark.filterwarnings("ignore::ief_jobs.JobCountChanged")
    async def test_more_ties_than_a_page_holds(
        self, creates: int, deletes: int, descending: bool, window: int, seed: int
    ) -> None:
        """Thirty jobs to a created_at, twenty to a page, in a new order on every
        read, with or without churn: reads of them grow until one holds them
        all (before, a listing skipped jobs in every seed, churn or not)."""
        server = ChurnServer(
            300,
            creates=creates,
            deletes=deletes,
            descending=descending,
            seed=seed,
            tie_every=30,
            churning=300,
        )
        before = server.ids()

        ids = await _listing(server.fetch, window=window, page_size=20)

        _assert_exact(server, before, ids)

    @pytest.mark.parametrize("seed", range(_SEEDS))
    async def test_more_ties_than_any_read_holds(self, seed: int) -> None:
        """Twenty-five jobs to a created_at, ten records a request at most: no
        read holds them all. Shuffled on every read, the walk says no read can
        show every one; in one order that holds, every job comes once."""
        shuffled = ChurnServer(100, seed=seed, tie_every=25, cap=10)
        with pytest.raises(ListingMovedError, match="no read can show every one"):
            await _listing(shuffled.fetch, page_size=20)

        steady = ChurnServer(100, seed=seed, tie_every=25, cap=10, steady_ties=True)
        ids = await _listing(steady.fetch, window=8, page_size=20)
        assert [j.job_id for j in steady.view()] == ids

    @_every_seed_window_and_order
    @pytest.mark.parametrize("page_size", [999, 1000])
    @pytest.mark.filterwarnings("ignore::ief_jobs.JobCountChanged")
    async def test_the_largest_pages_peek_too(
        self, page_size: int, descending: bool, window: int, seed: int
    ) -> None:
        """IEF refuses a limit over 1000: pages of 999 or 1000 asked no record
        past their end, so ties swapped under balanced churn could hide a job
        there. They now bring 998 new records, the peek included."""
        server = ChurnServer(
            2500,
            creates=1,
            deletes=1,
            descending=descending,
            seed=seed,
            tie_every=3,
        )
        before = server.ids()

        ids = await _listing(server.fetch, window=window, page_size=page_size)

        _assert_exact(server, before, ids)
        assert all(limit <= 1000 for _, limit in server.requests)

    @_every_seed_window_and_order
    @pytest.mark.filterwarnings("ignore::ief_jobs.JobCountChanged")
    async def test_max_items_peeks_too(
        self, descending: bool, window: int, seed: int
    ) -> None:
        """A walk with max_items asked no record past its pages: it peeks now,
        so no job that sorts before the last one yielded is skipped."""
        server = ChurnServer(
            300,
            creates=1,
            deletes=1,
            descending=descending,
            seed=seed,
            tie_every=3,
            churning=300,
        )
        before = server.ids()

        ids = await _listing(server.fetch, window=window, page_size=20, max_items=250)

        assert 250 == len(ids) == len(set(ids))
        times = {j.job_id: j.created_at for j in server.jobs}
        yielded = set(ids)
        # where the listing stopped: jobs sorting before it all came
        reached = [times[i] for i in yielded if i in times]
        edge = min(reached) if descending else max(reached)
        skipped = [
            i
            for i in before & server.ids()
            if i not in yielded and (times[i] > edge if descending else times[i] < edge)
        ]
        assert not skipped

    @pytest.mark.parametrize("seed", range(_SEEDS))
    @pytest.mark.parametrize("window", [1, 32])
    async def test_ties_that_swap_between_reads(self, window: int, seed: int) -> None:
        """Jobs sharing a created_at come in a different order on every read:
        none is lost, none comes twice, and the walk ends."""
        server = ChurnServer(500, seed=seed, tie_every=7)

        ids = await _listing(server.fetch, window=window, page_size=20)

        assert sorted(server.ids()) == sorted(ids)
        assert len(server.requests) < 500

    @_every_seed_window_and_order
    @pytest.mark.parametrize("tie_every", [2, 3, 7])
    @pytest.mark.parametrize(("creates", "deletes"), [(1, 1), (0, 3), (3, 1), (1, 0)])
    @pytest.mark.filterwarnings("ignore::ief_jobs.JobCountChanged")
    async def test_ties_that_swap_while_jobs_come_and_go(
        self,
        creates: int,
        deletes: int,
        tie_every: int,
        descending: bool,
        window: int,
        seed: int,
    ) -> None:
        """Jobs sharing a created_at (batches created in one second) come in a
        different order on every read while others are created or deleted: no
        survivor hides behind a boundary, none comes twice."""
        server = ChurnServer(
            300,
            creates=creates,
            deletes=deletes,
            descending=descending,
            seed=seed,
            tie_every=tie_every,
        )
        before = server.ids()

        ids = await _listing(server.fetch, window=window, page_size=20)

        _assert_exact(server, before, ids)

    async def test_nothing_changes_costs_nothing(self) -> None:
        """Without churn the boundary check costs no request: ceil(N / size)."""
        server = ChurnServer(800)

        ids = await _listing(server.fetch, window=8, page_size=50)

        assert [j.job_id for j in server.view()] == ids
        assert 16 == len(server.requests)


class TestChurnProperty:
    @given(
        total=st.integers(0, 400),
        size=st.integers(8, 80),
        window=st.sampled_from([1, 2, 8, 32]),
        creates=st.integers(0, 3),
        deletes=st.integers(0, 3),
        order=st.sampled_from(["desc", "asc", "scattered"]),
        cap=st.none() | st.integers(8, 100),
        seed=st.integers(0, 2**16),
    )
    @settings(suppress_health_check=[HealthCheck.too_slow])
    async def test_any_mix_of_churn(
        self,
        total: int,
        size: int,
        window: int,
        creates: int,
        deletes: int,
        order: str,
        cap: int | None,
        seed: int,
    ) -> None:
        """Any mix of creations and deletions, newest first, oldest first or an
        order not by created_at (new jobs land anywhere), pages in flight or
        not, a capped server: no survivor skipped and none twice. Where jobs
        change a quarter of a read (the page, or the server's cap if smaller)
        a request or faster, the walk may instead say it lost its place
        (ListingMovedError): never a short listing."""
        server = ChurnServer(
            total,
            creates=creates,
            deletes=deletes,
            descending=order == "desc",
            scattered=order == "scattered",
            seed=seed,
            cap=cap,
            churning=300,
        )
        before = server.ids()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", JobCountChanged)
            try:
                ids = await _listing(server.fetch, window=window, page_size=size)
            except ListingMovedError:
                # a capped server's page is its cap: what one read can hold
                read_width = size if cap is None else min(size, cap)
                assert 4 * (creates + deletes) >= read_width
                return

        _assert_exact(server, before, ids)


class TestOrder:
    @pytest.mark.parametrize("window", [1, 8])
    async def test_server_ignores_the_sort_asked(self, window: int) -> None:
        """Asked for created_at:asc, the server sends newest first anyway: every
        record is yielded, in the order sent."""
        server = ChurnServer(100, descending=True)

        ids = await _listing(
            server.fetch, window=window, page_size=10, sort=SortOrder.CREATED_AT_ASC
        )

        assert [j.job_id for j in server.view()] == ids

    @pytest.mark.parametrize("window", [1, 8])
    async def test_default_order_not_by_created_at(self, window: int) -> None:
        """No sort asked and the server's own order is not by created_at: every
        record is yielded."""
        server = ChurnServer(100)
        random.Random(5).shuffle(server.jobs)
        server.view = lambda: list(server.jobs)  # type: ignore[method-assign]

        ids = await _listing(server.fetch, window=window, page_size=10)

        assert [j.job_id for j in server.jobs] == ids


class TestStaleCount:
    # 5: the count ends right at the first page's end, which only the first
    # request's one-record peek can show
    @pytest.mark.parametrize("size", [1, 3, 4, 5, 10, 24, 25, 26, 100])
    @pytest.mark.parametrize("window", [1, 4])
    async def test_a_count_lower_than_the_records(self, size: int, window: int) -> None:
        """job_count says 5 over 25 records: every page size yields the 25, and
        says so once."""
        records = ChurnServer(25).view()

        async def stale(offset: int, limit: int) -> JobPage:
            return JobPage(
                project_id="p",
                offset=offset,
                job_count=5,
                jobs=tuple(records[offset : offset + limit]),
            )

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ids = await _listing(stale, window=window, page_size=size)

        assert [j.job_id for j in records] == ids
        assert [JobCountStale] == [w.category for w in caught]

    async def test_a_right_count_costs_no_request(self) -> None:
        """A count that is right is believed: the walk stops at it."""
        server = ChurnServer(100)

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ids = await _listing(server.fetch, window=4, page_size=25)

        assert 100 == len(ids)
        assert 4 == len(server.requests)

    @pytest.mark.parametrize("size", [25, 100])
    async def test_a_right_count_that_fits_one_page_costs_one_request(
        self, size: int
    ) -> None:
        """25 records, count 25, one page holds them: one request, no warning."""
        server = ChurnServer(25)

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ids = await _listing(server.fetch, window=4, page_size=size)

        assert 25 == len(ids)
        assert 1 == len(server.requests)


class TestReporting:
    async def test_count_changes_are_reported_once_per_listing(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A listing under churn warns once, with a text that never varies (so
        the once-per-place filter holds), and logs where at INFO."""
        texts: list[str] = []
        for seed in range(2):
            server = ChurnServer(2000, creates=2, deletes=1, seed=seed)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with caplog.at_level(logging.INFO, logger="ief_jobs"):
                    await _listing(server.fetch, window=8, page_size=100)
            assert [JobCountChanged] == [w.category for w in caught]
            texts.append(str(caught[0].message))

        assert 1 == len(set(texts))
        assert "job_count of project p changed from 2001 to " in caplog.text


class TestBounded:
    @pytest.mark.parametrize("seed", range(_SEEDS))
    @pytest.mark.filterwarnings("ignore::ief_jobs.JobCountChanged")
    async def test_resuming_after_records_moved_too_far_completes(
        self, seed: int
    ) -> None:
        """A burst of creations moves records further than a page between reads
        of three records: ListingMovedError says to resume from exc.offset, and
        doing so yields every job that existed throughout."""
        server = ChurnServer(400, creates=20, seed=seed, cap=3, churning=60)
        before = server.ids()
        first: list[str] = []
        with pytest.raises(ListingMovedError, match="moved too far") as info:
            async for page in walk_pages(
                server.fetch, ListQuery(page_size=20), project_id="p", window=4
            ):
                first += [job.job_id for job in page.jobs]
        assert "list again with offset=exc.offset" in str(info.value)

        query = ListQuery(page_size=20, offset=info.value.offset)
        rest = [
            job.job_id
            async for page in walk_pages(server.fetch, query, project_id="p")
            for job in page.jobs
        ]

        assert set() == (before & server.ids()) - set(first) - set(rest)

    @pytest.mark.parametrize("window", [1, 8])
    async def test_records_that_never_line_up_raise(self, window: int) -> None:
        """A server whose every answer is new records never seen again ends in
        ListingMovedError, not a hang."""
        serial = 0

        async def chaos(offset: int, limit: int) -> JobPage:
            nonlocal serial
            jobs = tuple(_job(serial + i) for i in range(limit))
            serial += limit
            return JobPage(project_id="p", offset=offset, job_count=10**6, jobs=jobs)

        pages = walk_pages(
            chaos, ListQuery(page_size=10), project_id="p", window=window
        )
        resume = None
        with pytest.raises(ListingMovedError) as info:
            async for page in pages:
                resume = page.next_offset

        assert (resume, "p") == (info.value.offset, info.value.project_id)
        assert serial < 10**4
