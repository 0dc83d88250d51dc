"""The client against the emulator on 127.0.0.1: the real code end to end."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from _support import no_sleep
from ief_jobs import (
    ApiError,
    AuthenticationError,
    IefClient,
    JobStatus,
    JobType,
    ListingMovedError,
    NotFoundError,
    RetryPolicy,
    ServerError,
    SortOrder,
    ThrottledError,
    TokenAuth,
)
from ief_jobs.emulator import Emulator, Faults, generate_jobs, project_ids_for
from ief_jobs.errors import error_from_response

_RETRY = RetryPolicy(attempts=6, sleep=no_sleep, jitter=lambda: 0.0)


@pytest.fixture(name="emulator")
async def _emulator() -> AsyncIterator[Emulator]:
    empty = project_ids_for(3, seed=1)[0]
    async with Emulator(projects=3, jobs={empty: 0}, seed=1) as emulator:
        yield emulator


@contextlib.asynccontextmanager
async def _client(
    emulator: Emulator, *, retry: RetryPolicy = _RETRY, **kwargs: object
) -> AsyncIterator[IefClient]:
    async with IefClient(
        emulator.base_url,
        auth=TokenAuth(emulator.token),
        retry=retry,
        **kwargs,  # type: ignore[arg-type]
    ) as client:
        yield client


def _ids(jobs: list) -> list[str]:  # type: ignore[type-arg]
    return [j.job_id if hasattr(j, "job_id") else j["job_id"] for j in jobs]


class TestListing:
    async def test_capped_pages_lose_nothing(self) -> None:
        """A server capping limit below page_size still gives every job, in order."""
        async with Emulator(
            projects=1, jobs=1234, faults=Faults(page_cap=70)
        ) as emulator:
            async with _client(emulator, page_size=200) as ief:
                jobs = await ief.list_jobs(emulator.project_ids[0])
            expected = emulator.jobs(emulator.project_ids[0])[::-1]
            assert _ids(expected) == _ids(jobs)
            # the first page shows the cap; each later one brings 68 new
            # records (one before them, one past), 1 + ceil(1164 / 68) = 19,
            # and the first boundary, which no record past was read for, once
            assert 20 == emulator.stats.requests

    @pytest.mark.parametrize(
        "sort", [SortOrder.CREATED_AT_ASC, SortOrder.CREATED_AT_DESC]
    )
    async def test_both_sort_orders(self, sort: SortOrder) -> None:
        """Both orders list every job, sorted by created_at as asked."""
        async with Emulator(projects=1, jobs=321) as emulator, _client(emulator) as ief:
            jobs = await ief.list_jobs(emulator.project_ids[0], sort=sort)

        times = [j.created_at for j in jobs]
        assert 321 == len(set(_ids(jobs)))
        assert sorted(times, reverse=sort == SortOrder.CREATED_AT_DESC) == times

    async def test_job_type_filter(self) -> None:
        """job_type lists only that type, and job_count counts only those."""
        async with Emulator(projects=1, jobs=500) as emulator, _client(emulator) as ief:
            pid = emulator.project_ids[0]
            jobs = await ief.list_jobs(pid, job_type=JobType.NODE_UPGRADE)
            total = await ief.count_jobs(pid, job_type=JobType.NODE_UPGRADE)

        expected = [j for j in emulator.jobs(pid) if j["job_type"] == "node_upgrade"]
        assert len(expected) == len(jobs) == total
        assert {JobType.NODE_UPGRADE} == {j.job_type for j in jobs}

    async def test_many_projects_in_each_order(self) -> None:
        """iter_jobs_many gives each project's jobs once, in that project's order."""
        async with Emulator(projects=4, jobs=450) as emulator, _client(emulator) as ief:
            seen: dict[str, list[str]] = {}
            async for pid, job in ief.iter_jobs_many(emulator.project_ids * 2):
                seen.setdefault(pid, []).append(job.job_id)

            for pid in emulator.project_ids:
                assert _ids(emulator.jobs(pid)[::-1]) == seen[pid]
            assert emulator.stats.max_in_flight <= ief.concurrency

    async def test_in_flight_bound_is_kept(self) -> None:
        """The client's concurrency bounds requests in flight across all projects."""
        faults = Faults(latency=0.005)
        async with Emulator(projects=6, jobs=400, faults=faults) as emulator:
            async with _client(emulator, concurrency=5, page_size=20) as ief:
                count = sum([1 async for _ in ief.iter_jobs_many(emulator.project_ids)])

            assert 2400 == count
            assert 5 == emulator.stats.max_in_flight


class TestFanOut:
    @given(
        totals=st.lists(st.integers(0, 300), min_size=1, max_size=4),
        cap=st.integers(3, 120),  # fewer: see test_too_few_records_a_request
        page_size=st.integers(1, 150),
        concurrency=st.integers(1, 8),
        max_items=st.none() | st.integers(0, 320),
    )
    async def test_every_record_once_per_project_in_order(
        self,
        totals: list[int],
        cap: int,
        page_size: int,
        concurrency: int,
        max_items: int | None,
    ) -> None:
        """Any projects, totals, cap, page size, bound and max_items: each project's
        records exactly once, in its order, never more in flight than the bound."""
        ids = project_ids_for(len(totals), seed=5)
        jobs = dict(zip(ids, totals, strict=True))
        faults = Faults(page_cap=cap)
        async with Emulator(projects=ids, jobs=jobs, faults=faults) as emulator:
            async with _client(
                emulator, concurrency=concurrency, page_size=page_size
            ) as ief:
                seen: dict[str, list[str]] = {pid: [] for pid in ids}
                async for pid, job in ief.iter_jobs_many(ids, max_items=max_items):
                    seen[pid].append(job.job_id)

            for pid in ids:
                assert _ids(emulator.jobs(pid)[::-1][:max_items]) == seen[pid]
            assert emulator.stats.max_in_flight <= concurrency

    async def test_too_few_records_a_request(self) -> None:
        """A server serving two records a request leaves no room to check a
        boundary: the listing fails with ListingMovedError, never lists on
        unchecked."""
        ids = project_ids_for(1, seed=5)
        async with Emulator(
            projects=ids, jobs=50, faults=Faults(page_cap=2)
        ) as emulator:
            async with _client(emulator, page_size=20) as ief:
                with pytest.raises(ListingMovedError, match="too few to check"):
                    await ief.list_jobs(ids[0])

    async def test_a_small_project_is_not_held_back_by_a_big_one(self) -> None:
        """Ten jobs listed after 20,000 arrive before 5% of the big project."""
        big, small = project_ids_for(2, seed=3)
        faults = Faults(latency=0.002)
        jobs = {big: 20_000, small: 10}
        async with Emulator(projects=[big, small], jobs=jobs, faults=faults) as emu:
            async with _client(emu, concurrency=4, page_size=50) as ief:
                order = [pid async for pid, _ in ief.iter_jobs_many([big, small])]

        last_small = len(order) - order[::-1].index(small)
        assert 10 == order.count(small)
        assert last_small < 1_000

    async def test_a_slow_consumer_stops_the_fetching(self) -> None:
        """A consumer that stops reading stops the requests once the buffer is full."""
        async with Emulator(projects=3, jobs=3000) as emulator:
            async with _client(emulator, concurrency=4, page_size=10) as ief:
                jobs = ief.iter_jobs_many(emulator.project_ids)
                async with contextlib.aclosing(jobs):
                    await anext(jobs)
                    sent = -1
                    while sent != emulator.stats.requests:  # until fetching settles
                        sent = emulator.stats.requests
                        await asyncio.sleep(0.02)
                    rest = sum([1 async for _ in jobs])

        # the buffer (4 pages), one page per walk waiting to enter it, each
        # walk's window (4) and the one page being read: far from 900 pages
        assert sent <= 4 + 3 * (1 + 4) + 1
        assert 9000 == 1 + rest

    async def test_the_first_failure_stops_the_rest(self) -> None:
        """errors="raise" (the default): the first failure is raised at once and the
        other projects' requests stop with it."""
        faults = Faults(latency=0.01)
        async with Emulator(projects=3, jobs=5000, faults=faults) as emulator:
            ids = ["ffffffffffffffffffffffffffffffff", *emulator.project_ids]
            async with _client(emulator, page_size=10) as ief:
                with pytest.raises(ApiError) as info:
                    async for _ in ief.iter_jobs_many(ids):
                        pass
                sent = emulator.stats.requests
                await asyncio.sleep(0.03)

                assert sent == emulator.stats.requests
                assert sent < 1503  # far from a full listing
                assert 0 == ief.limiter.in_flight
        assert ("ffffffffffffffffffffffffffffffff", 0) == (
            info.value.project_id,
            info.value.offset,
        )


class TestErrors:
    async def test_wrong_token(self, emulator: Emulator) -> None:
        """A wrong token is an AuthenticationError with APIG.0301 and the request id."""
        async with IefClient(emulator.base_url, auth=TokenAuth("wrong")) as ief:
            with pytest.raises(AuthenticationError) as info:
                await ief.count_jobs(emulator.project_ids[1])

        assert (401, "APIG.0301") == (info.value.status, info.value.error_code)
        assert info.value.request_id

    async def test_unknown_path_is_not_found(self, emulator: Emulator) -> None:
        """A wrong base path is a NotFoundError."""
        async with IefClient(
            emulator.base_url + "/nope", auth=TokenAuth(emulator.token)
        ) as ief:
            with pytest.raises(NotFoundError):
                await ief.count_jobs(emulator.project_ids[1])

    async def test_limit_out_of_range(self, emulator: Emulator) -> None:
        """A page size above the server's range is IEF.100005 (sent raw: the
        client refuses a page size over 1,000 before any request)."""
        pid = emulator.project_ids[1]
        url = f"{emulator.base_url}/v2/{pid}/productmgr/jobs?limit=5000&offset=0"
        headers = {"X-Auth-Token": emulator.token, "X-Project-Id": pid}
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=headers) as response,
        ):
            error = error_from_response(
                response.status, await response.read(), response.headers
            )

        assert "IEF.100005" == error.error_code

    async def test_throttled_after_retries(self, emulator: Emulator) -> None:
        """Throttling that never ends is a ThrottledError with Retry-After."""
        emulator.faults.throttled_rate = 1.0
        async with _client(emulator) as ief:
            with pytest.raises(ThrottledError) as info:
                await ief.count_jobs(emulator.project_ids[1])

        assert 1.0 == info.value.retry_after
        assert 6 == info.value.attempts

    async def test_empty_project(self, emulator: Emulator) -> None:
        """A project with no jobs costs one request and yields nothing."""
        async with _client(emulator) as ief:
            assert [] == await ief.list_jobs(emulator.project_ids[0])

        assert 1 == emulator.stats.requests


class TestCancellation:
    async def test_break_leaves_nothing_running(self) -> None:
        """Breaking out after the first record cancels everything behind it."""
        faults = Faults(latency=0.02)
        async with Emulator(projects=5, jobs=3000, faults=faults) as emulator:
            async with _client(emulator, page_size=50) as ief:
                jobs = ief.iter_jobs_many(emulator.project_ids)
                async with contextlib.aclosing(jobs):
                    async for _ in jobs:
                        break
                sent = emulator.stats.requests
                await asyncio.sleep(0.05)

                assert sent == emulator.stats.requests
                assert 0 == ief.limiter.in_flight
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert [] == [t for t in others if "ief-jobs" in t.get_name()]

    async def test_timeout_around_the_loop(self) -> None:
        """A timeout around the loop cancels the listing cleanly."""
        faults = Faults(latency=0.05)
        async with Emulator(projects=2, jobs=5000, faults=faults) as emulator:
            async with _client(emulator, page_size=10) as ief:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        async for _ in ief.iter_jobs_many(emulator.project_ids):
                            pass
                assert 0 == ief.limiter.in_flight

    async def test_collect_errors_keeps_other_projects(self) -> None:
        """errors="collect": a failing project does not hide the others' records."""
        async with Emulator(projects=3, jobs=120) as emulator, _client(emulator) as ief:
            ids = [*emulator.project_ids, "ffffffffffffffffffffffffffffffff"]
            got: dict[str, int] = {}
            with pytest.raises(ExceptionGroup) as info:
                async for pid, _ in ief.iter_jobs_many(ids, errors="collect"):
                    got[pid] = got.get(pid, 0) + 1

        assert dict.fromkeys(emulator.project_ids, 120) == got
        [error] = info.value.exceptions
        assert isinstance(error, AuthenticationError)
        assert ("ffffffffffffffffffffffffffffffff", 0) == (
            error.project_id,
            error.offset,
        )


class TestFaults:
    async def test_every_record_once_through_faults(self) -> None:
        """5xx, 429, dropped connections and cut bodies: every record exactly once."""
        faults = Faults(
            server_error_rate=0.2,
            throttled_rate=0.1,
            retry_after="0",
            drop_rate=0.05,
            truncate_rate=0.05,
        )
        retry = RetryPolicy(attempts=12, sleep=no_sleep, jitter=lambda: 0.0)
        seed = int(os.environ.get("IEF_JOBS_FAULT_SEED", "3"))
        async with Emulator(
            projects=5, jobs=2000, faults=faults, seed=seed
        ) as emulator:
            async with _client(emulator, retry=retry) as ief:
                seen: dict[str, list[str]] = {}
                async for pid, job in ief.iter_jobs_many(emulator.project_ids):
                    seen.setdefault(pid, []).append(job.job_id)

            for pid in emulator.project_ids:
                assert _ids(emulator.jobs(pid)[::-1]) == seen[pid]
            # 100 pages; each fault rate adds its share of retries (about 1.7x)
            assert emulator.stats.requests <= 100 * 2.5

    async def test_resume_after_the_retry_budget_runs_out(self) -> None:
        """A fault that outlasts the retries names project, offset and attempts;
        resuming from that offset completes the listing exactly."""
        retry = RetryPolicy(attempts=3, sleep=no_sleep, jitter=lambda: 0.0)
        async with Emulator(projects=1, jobs=1000) as emulator:
            pid = emulator.project_ids[0]
            got: list[str] = []
            async with _client(
                emulator, retry=retry, page_size=50, concurrency=2
            ) as ief:
                with pytest.raises(ServerError) as info:
                    async for job in ief.iter_jobs(pid):
                        got.append(job.job_id)
                        if len(got) == 300:  # the backend goes down mid-listing
                            emulator.faults.server_error_rate = 1.0
                emulator.faults.server_error_rate = 0.0
                error = info.value
                got += [j.job_id async for j in ief.iter_jobs(pid, offset=error.offset)]

        assert (pid, 3) == (error.project_id, error.attempts)
        assert 300 <= error.offset < 1000
        assert _ids(emulator.jobs(pid)[::-1]) == got


def _assert_consistent(job: dict[str, object]) -> None:
    ok, failed = job["task_success_count"], job["task_failed_count"]
    assert isinstance(ok, int)
    assert isinstance(failed, int)
    assert ok + failed <= job["task_total_count"]  # type: ignore[operator]
    assert job["status_last_updated_at"] >= job["created_at"]  # type: ignore[operator]
    if job["status"] == JobStatus.SUCCESSFUL:
        assert (ok, failed) == (job["task_total_count"], 0)
    if job["status"] == JobStatus.PARTIALLY_SUCCESSFUL:
        assert ok >= 1
        assert failed >= 1
    if job["status"] == JobStatus.FAILED:
        assert failed >= 1
    if job["status"] == JobStatus.WAITING:
        assert (0, 0) == (ok, failed)


class TestData:
    @given(seed=st.integers(0, 10_000), count=st.integers(0, 300))
    def test_seeded_jobs_are_realistic(self, seed: int, count: int) -> None:
        """Generated jobs keep IEF's rules: counts agree with status, times in order."""
        jobs = generate_jobs("p", count, seed=seed)

        assert jobs == generate_jobs("p", count, seed=seed)
        assert len({j["job_id"] for j in jobs}) == count
        times = [j["created_at"] for j in jobs]
        assert sorted(set(times)) == times
        for job in jobs:
            _assert_consistent(job)
        if count >= len(JobStatus):
            assert {s.value for s in JobStatus} <= {j["status"] for j in jobs}
            assert {t.value for t in JobType} <= {j["job_type"] for j in jobs}

    @given(seed=st.integers(0, 10_000), steps=st.lists(st.floats(0, 400), max_size=8))
    async def test_running_jobs_advance_and_stay_consistent(
        self, seed: int, steps: list[float]
    ) -> None:
        """In running mode, task counts only grow, final jobs stay final, every
        state keeps IEF's rules, and within an hour of fake time all are final."""
        now = [1_800_000_000.0]
        async with Emulator(
            projects=1, jobs=40, seed=seed, running=True, clock=lambda: now[0]
        ) as emulator:
            pid = emulator.project_ids[0]
            last = {j["job_id"]: dict(j) for j in emulator.jobs(pid)}
            for step in [*steps, 3600.0]:
                now[0] += step
                for job in emulator.jobs(pid):
                    old = last[job["job_id"]]
                    _assert_consistent(job)
                    assert job["task_success_count"] >= old["task_success_count"]
                    assert job["task_failed_count"] >= old["task_failed_count"]
                    if JobStatus(old["status"]).is_final:
                        assert old == job
                    last[job["job_id"]] = dict(job)

        assert all(JobStatus(j["status"]).is_final for j in last.values())


class TestThrottling:
    async def test_a_429_storm_settles_under_the_gateway_limit(self) -> None:
        """20 projects against a gateway allowing 6 requests in flight: the client's
        32 shrink to about 6, so most requests are served, not refused."""
        faults = Faults(latency=0.003, concurrency_limit=6)
        retry = RetryPolicy(attempts=20, sleep=no_sleep, jitter=lambda: 0.0)
        async with Emulator(projects=20, jobs=300, faults=faults) as emulator:
            async with _client(
                emulator, retry=retry, concurrency=32, page_size=10
            ) as ief:
                seen: set[str] = set()
                async for _, job in ief.iter_jobs_many(emulator.project_ids):
                    seen.add(job.job_id)
                    if len(seen) == 3000:  # settled by now: measure from here
                        ief.limiter.max_in_flight = 0
                settled_peak = ief.limiter.max_in_flight

        assert 6000 == len(seen)
        assert settled_peak <= 2 * 6
        assert emulator.stats.max_in_flight <= 6 + 2
        assert emulator.stats.faults["throttled"] < 0.2 * 600  # 600 pages


class TestDriftAgainstEmulator:
    @pytest.mark.parametrize(
        "sort", [SortOrder.CREATED_AT_DESC, SortOrder.CREATED_AT_ASC]
    )
    @pytest.mark.parametrize(
        ("creates", "deletes", "concurrency"),
        [
            (2, 3, 1),
            (2, 3, 8),
            (0, 3, 8),
            (3, 1, 8),
            # as many created as deleted: job_count never moves (issue 13)
            (1, 1, 1),
            (3, 3, 8),
            (5, 5, 32),
        ],
    )
    @pytest.mark.filterwarnings("ignore::ief_jobs.JobCountChanged")
    async def test_churn_while_listing(
        self, sort: SortOrder, creates: int, deletes: int, concurrency: int
    ) -> None:
        """Jobs created and deleted on every request while listing, pages in flight
        at once, job_count moving or not: no job twice, none that lived through
        the whole listing skipped."""
        faults = Faults(creates_per_request=creates, deletes_per_request=deletes)
        seed = int(os.environ.get("IEF_JOBS_FAULT_SEED", "3"))
        async with Emulator(
            projects=1, jobs=1500, faults=faults, seed=seed
        ) as emulator:
            pid = emulator.project_ids[0]
            before = {j["job_id"] for j in emulator.jobs(pid)}
            async with _client(emulator, page_size=50, concurrency=concurrency) as ief:
                ids = [j.job_id async for j in ief.iter_jobs(pid, sort=sort)]
            survivors = before & {j["job_id"] for j in emulator.jobs(pid)}

        assert len(ids) == len(set(ids))
        assert survivors <= set(ids)
