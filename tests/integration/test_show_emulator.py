"""IefClient.get_job against the emulator's ShowBatchJob on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from _support import no_sleep
from ief_jobs import (
    AkSkAuth,
    AuthenticationError,
    BatchJobDetail,
    IamPasswordAuth,
    IefClient,
    JobStatus,
    NotFoundError,
    RetryPolicy,
    TokenAuth,
)
from ief_jobs.emulator import Emulator

_RETRY = RetryPolicy(attempts=8, sleep=no_sleep, jitter=lambda: 0.0)


@contextlib.asynccontextmanager
async def _client(emulator: Emulator, **kwargs: object) -> AsyncIterator[IefClient]:
    async with IefClient(
        emulator.base_url,
        auth=TokenAuth(emulator.token),
        retry=_RETRY,
        **kwargs,  # type: ignore[arg-type]
    ) as client:
        yield client


def _assert_tasks_agree(detail: BatchJobDetail) -> None:
    statuses = Counter(task.status for task in detail.tasks)
    assert detail.task_total_count == len(detail.tasks) == len(detail.targets)
    assert detail.task_success_count == statuses.pop(JobStatus.SUCCESSFUL, 0)
    assert detail.task_failed_count == statuses.pop(JobStatus.FAILED, 0)
    open_tasks = {
        JobStatus.WAITING: {JobStatus.WAITING},
        JobStatus.RUNNING: {JobStatus.RUNNING},
        JobStatus.STOPPING: {JobStatus.WAITING},
        JobStatus.STOPPED: {JobStatus.STOPPED},
        JobStatus.TIMED_OUT: {JobStatus.TIMED_OUT},
    }.get(JobStatus(detail.status), set())
    assert set(statuses) <= open_tasks
    assert [t.target_id for t in detail.tasks] == [t.target_id for t in detail.targets]
    for task in detail.tasks:
        assert task.created_at >= detail.created_at
        assert (task.status == JobStatus.FAILED) == bool(task.reason)


class TestConsistentWithTheList:
    async def test_every_job_of_a_project(self) -> None:
        """For every listed job, the detail's ten fields are its list record's,
        and its tasks agree with the counts; asked twice, the same answer."""
        async with (
            Emulator(projects=1, jobs=300, seed=2) as emulator,
            _client(emulator) as ief,
        ):
            pid = emulator.project_ids[0]
            jobs = await ief.list_jobs(pid)
            details = await asyncio.gather(*(ief.get_job(pid, j.job_id) for j in jobs))
            again = await ief.get_job(pid, jobs[7].job_id)

        assert jobs == [detail.to_job() for detail in details]
        assert {"list": 3, "show": 301} == emulator.stats.requests_by_call
        for detail in details:
            _assert_tasks_agree(detail)
        assert details[7] == again
        assert {"node", "deployment"} == {d.target_type for d in details}
        assert all((d.task_data == "") == (d.target_type == "node") for d in details)

    async def test_running_jobs_at_each_clock_time(self) -> None:
        """While jobs run, the detail read at a clock time matches the list read
        at that time, step after step."""
        now = [1_800_000_000.0]
        async with (
            Emulator(
                projects=1,
                jobs=40,
                seed=4,
                running=True,
                new_jobs_per_hour=120,
                clock=lambda: now[0],
            ) as emulator,
            _client(emulator) as ief,
        ):
            pid = emulator.project_ids[0]
            for step in (0.0, 20.0, 90.0, 300.0, 900.0):
                now[0] += step
                jobs = await ief.list_jobs(pid)
                unfinished = [j for j in jobs if not j.is_final]
                details = [await ief.get_job(pid, j.job_id) for j in unfinished]
                assert unfinished == [d.to_job() for d in details]
                for detail in details:
                    _assert_tasks_agree(detail)


class TestErrors:
    async def test_an_unknown_job_is_not_found(self) -> None:
        """An id the project does not have is a 404: NotFoundError with an
        IEF-style code; a deleted job is gone the same way."""
        async with Emulator(projects=1, jobs=10) as emulator, _client(emulator) as ief:
            pid = emulator.project_ids[0]
            with pytest.raises(NotFoundError) as info:
                await ief.get_job(pid, "0a95c8df-eab5-4a8b-a63b-df9f208ad0ce")
            victim = emulator.jobs(pid)[3]["job_id"]
            emulator.delete_job(pid, victim)
            with pytest.raises(NotFoundError):
                await ief.get_job(pid, victim)

        assert ("IEF.100404", pid) == (info.value.error_code, info.value.project_id)
        assert info.value.request_id

    async def test_a_wrong_token_is_refused(self) -> None:
        """The list's auth applies: a wrong token is AuthenticationError."""
        async with Emulator(projects=1, jobs=5) as emulator:
            pid = emulator.project_ids[0]
            job_id = emulator.jobs(pid)[0]["job_id"]
            async with IefClient(emulator.base_url, auth=TokenAuth("nope")) as ief:
                with pytest.raises(AuthenticationError):
                    await ief.get_job(pid, job_id)

    async def test_signed_and_iam_requests_are_accepted(self) -> None:
        """AK/SK signing and IAM password tokens work for a detail too."""
        async with Emulator(projects=1, jobs=5) as emulator:
            first = emulator.project_ids[0]
            key, user = emulator.access_key, emulator.iam_user
            job_id = emulator.jobs(first)[0]["job_id"]
            signed = AkSkAuth(key.access_key, key.secret_key)
            async with IefClient(emulator.base_url, auth=signed) as ief:
                assert job_id == (await ief.get_job(first, job_id)).job_id
            iam = IamPasswordAuth(
                user.name, user.password, user.domain, iam_endpoint=emulator.base_url
            )
            async with IefClient(emulator.base_url, auth=iam) as ief:
                assert job_id == (await ief.get_job(first, job_id)).job_id

    async def test_faults_apply_and_retries_see_them_through(self) -> None:
        """5xx, 429 and dropped connections strike details too; with retries
        every detail still arrives, equal to the quiet answer."""
        async with (
            Emulator(projects=1, jobs=60, seed=3) as emulator,
            _client(emulator) as ief,
        ):
            pid = emulator.project_ids[0]
            ids = [j["job_id"] for j in emulator.jobs(pid)]
            quiet = [await ief.get_job(pid, job_id) for job_id in ids]
            faults = emulator.faults
            faults.server_error_rate, faults.throttled_rate = 0.3, 0.1
            faults.drop_rate, faults.retry_after = 0.1, "0"
            noisy = [await ief.get_job(pid, job_id) for job_id in ids]

        assert quiet == noisy
        assert emulator.stats.faults["server_error"] > 0
        assert ief.requests_sent > 2 * len(ids)
