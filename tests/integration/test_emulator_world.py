"""The emulator's world: recent unfinished jobs, running on its clock alone, and
`Emulator.transitions`, the ground truth a watch is held to."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import aiohttp
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ief_jobs import IefClient, JobStatus, TokenAuth
from ief_jobs.emulator import (
    RECENT,
    Emulator,
    Transition,
    generate_jobs,
)
from ief_jobs.models import FINAL_STATUSES

START = 1_800_000_000.0


class FakeClock:
    """Unix seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def _open(job: dict[str, Any]) -> bool:
    return not JobStatus(job["status"]).is_final


def _statuses(emulator: Emulator) -> dict[tuple[str, str], str]:
    return {
        (pid, job["job_id"]): job["status"]
        for pid in emulator.project_ids
        for job in emulator.jobs(pid)
    }


def _replay(
    start: dict[tuple[str, str], str], transitions: list[Transition]
) -> dict[tuple[str, str], str]:
    world = dict(start)
    for t in transitions:
        key = (t.project_id, t.job_id)
        assert world.get(key) == t.old_status, t  # each change starts where it was
        if t.new_status is None:
            del world[key]
        else:
            world[key] = t.new_status
    return world


class TestSeededData:
    @given(
        seed=st.integers(0, 10_000),
        count=st.integers(0, 1200),
        stragglers=st.integers(0, 5),
    )
    @example(seed=0, count=RECENT + 7, stragglers=5)  # less room than stragglers
    def test_unfinished_jobs_are_recent_bar_the_stragglers(
        self, seed: int, count: int, stragglers: int
    ) -> None:
        """Waiting, running and paused jobs are among the newest RECENT, except
        exactly *stragglers* old ones deep in the list; all the rest are final."""
        jobs = generate_jobs("p", count, seed=seed, stragglers=stragglers)

        old = [j for j in jobs[: max(count - RECENT, 0)] if _open(j)]
        # the oldest few cover the final statuses: stragglers come after them
        room = max(count - RECENT - len(FINAL_STATUSES), 0)
        assert min(stragglers, room) == len(old)
        if count >= len(JobStatus):
            assert all(_open(j) for j in jobs[-3:])  # the newest three run or wait
        assert jobs == generate_jobs("p", count, seed=seed, stragglers=stragglers)

    def test_running_data_ends_at_the_clock(self) -> None:
        """With running=True the newest job was made just before the clock's
        time, and no status moved after it."""
        clock = FakeClock()
        emulator = Emulator(projects=2, jobs=500, running=True, clock=clock)
        for pid in emulator.project_ids:
            jobs = emulator.jobs(pid)
            assert START - 3600 < jobs[-1]["created_at"] <= START
            assert all(j["status_last_updated_at"] <= START for j in jobs)
            assert all(j["status_last_updated_at"] >= j["created_at"] for j in jobs)


class TestRunningOnTheClock:
    async def test_a_still_clock_is_a_still_world(self) -> None:
        """However many list and show requests come, nothing changes while the
        clock stands; once it moves, the world does."""
        clock = FakeClock()
        async with Emulator(
            projects=2, jobs=300, running=True, new_jobs_per_hour=600, clock=clock
        ) as emulator:
            pids = emulator.project_ids
            before = {pid: [dict(j) for j in emulator.jobs(pid)] for pid in pids}
            headers = {"X-Auth-Token": emulator.token}
            async with aiohttp.ClientSession(headers=headers) as session:
                for pid in pids:
                    for job in before[pid][-RECENT:]:
                        url = f"{emulator.base_url}/v2/{pid}/productmgr/jobs"
                        async with session.get(f"{url}/{job['job_id']}") as answer:
                            assert 200 == answer.status
                        async with session.get(url, params={"limit": "5"}) as answer:
                            assert 200 == answer.status

            assert before == {pid: emulator.jobs(pid) for pid in pids}
            assert [] == emulator.transitions
            clock.now += 600
            assert emulator.transitions

    async def test_the_world_is_a_function_of_the_clock_alone(self) -> None:
        """Two emulators of one seed, read at the same times, agree, whether or
        not requests were served in between."""
        clocks = FakeClock(), FakeClock()
        quiet, busy = (
            Emulator(
                projects=2,
                jobs=400,
                seed=5,
                running=True,
                new_jobs_per_hour=90,
                clock=clock,
            )
            for clock in clocks
        )
        async with busy, IefClient(busy.base_url, auth=TokenAuth(busy.token)) as ief:
            for step in (7.0, 30.0, 95.5, 400.0, 1800.0):
                for clock in clocks:
                    clock.now += step
                for pid in busy.project_ids:
                    await ief.list_jobs(pid)
            assert busy.transitions == quiet.transitions
            assert _statuses(busy) == _statuses(quiet)

    def test_new_jobs_arrive_at_the_rate(self) -> None:
        """At 60 jobs an hour, an hour of clock brings 60 new Waiting jobs per
        project, each newer than all before and each recorded as a creation."""
        clock = FakeClock()
        emulator = Emulator(
            projects=2, jobs=50, running=True, new_jobs_per_hour=60, clock=clock
        )
        clock.now += 3600
        created = [t for t in emulator.transitions if t.old_status is None]

        for pid in emulator.project_ids:
            mine = [t for t in created if t.project_id == pid]
            assert 60 == len(mine) == len(emulator.jobs(pid)) - 50
            assert {JobStatus.WAITING} == {t.new_status for t in mine}
            assert [START + 60 * (i + 1) for i in range(60)] == [
                t.at.timestamp() for t in mine
            ]
            times = [j["created_at"] for j in emulator.jobs(pid)]
            assert sorted(set(times)) == times

    def test_a_negative_rate_is_refused(self) -> None:
        """new_jobs_per_hour below 0 is a ValueError at construction."""
        with pytest.raises(ValueError, match="new_jobs_per_hour"):
            Emulator(running=True, new_jobs_per_hour=-1)


class TestTransitions:
    @given(
        seed=st.integers(0, 1000),
        steps=st.lists(
            st.tuples(
                st.floats(0, 900),
                st.sampled_from(["nothing", "create", "delete", "status", "churn"]),
                st.sampled_from(list(JobStatus)),
            ),
            max_size=12,
        ),
    )
    async def test_replaying_transitions_rebuilds_the_world(
        self, seed: int, steps: list[tuple[float, str, JobStatus]]
    ) -> None:
        """Every change is recorded, in order of time: the first world with every
        transition applied is the world now, whatever made the changes."""
        clock = FakeClock()
        emulator = Emulator(
            projects=2,
            jobs=60,
            seed=seed,
            running=True,
            new_jobs_per_hour=30,
            clock=clock,
        )
        start = _statuses(emulator)
        pid = emulator.project_ids[0]
        for seconds, action, status in steps:
            clock.now += seconds
            some = emulator.jobs(pid)[len(emulator.jobs(pid)) // 2]["job_id"]
            if action == "create":
                emulator.create_job(pid, status=status)
            elif action == "delete":
                emulator.delete_job(pid, some)
            elif action == "status":
                emulator.set_status(pid, some, status)
            elif action == "churn":  # the faults' creates and deletes
                emulator.faults.creates_per_request = 2
                emulator.faults.deletes_per_request = 1
                async with (
                    emulator,
                    IefClient(emulator.base_url, auth=TokenAuth(emulator.token)) as ief,
                ):
                    await ief.count_jobs(pid)
                emulator.faults.creates_per_request = 0
                emulator.faults.deletes_per_request = 0
        clock.now += 3600
        transitions = emulator.transitions

        assert _replay(start, transitions) == _statuses(emulator)
        times = [t.at for t in transitions]
        assert sorted(times) == times
        assert all(at.tzinfo is UTC for at in times)  # aware, as every time is
        assert all(START <= at.timestamp() <= clock.now for at in times)

    def test_public_changes_are_recorded_with_the_clock(self) -> None:
        """create_job, set_status and delete_job each add one transition at the
        clock's time; set_status moves the task counts to agree."""
        clock = FakeClock()
        emulator = Emulator(projects=1, jobs=20, clock=clock)
        pid = emulator.project_ids[0]
        clock.now += 5
        job = emulator.create_job(pid, status=JobStatus.RUNNING)
        clock.now += 5
        done = emulator.set_status(pid, job["job_id"], JobStatus.SUCCESSFUL)
        emulator.set_status(pid, job["job_id"], JobStatus.SUCCESSFUL)  # no change
        clock.now += 5
        gone = emulator.delete_job(pid, job["job_id"])

        assert [
            Transition(pid, job["job_id"], None, JobStatus.RUNNING, START + 5),
            Transition(
                pid, job["job_id"], JobStatus.RUNNING, JobStatus.SUCCESSFUL, START + 10
            ),
            Transition(pid, job["job_id"], JobStatus.SUCCESSFUL, None, START + 15),
        ] == emulator.transitions
        assert done["task_success_count"] == done["task_total_count"]
        assert done["status_last_updated_at"] == int(START + 10)
        assert gone["job_id"] not in {j["job_id"] for j in emulator.jobs(pid)}

    def test_an_unknown_job_or_project_is_a_key_error(self) -> None:
        """The public methods refuse what the emulator does not have."""
        emulator = Emulator(projects=1, jobs=3)
        pid = emulator.project_ids[0]
        with pytest.raises(KeyError):
            emulator.delete_job(pid, "nope")
        with pytest.raises(KeyError):
            emulator.set_status(pid, "nope", JobStatus.FAILED)
        with pytest.raises(KeyError, match="no project"):
            emulator.create_job("nope")
        assert [] == emulator.transitions

    async def test_a_running_job_records_each_step(self) -> None:
        """A waiting job that starts and ends between two reads of the clock
        records both steps, at the times they happened."""
        clock = FakeClock()
        emulator = Emulator(projects=1, jobs=0, running=True, clock=clock)
        pid = emulator.project_ids[0]
        job = emulator.create_job(pid)
        clock.now += 3600
        steps = [t for t in emulator.transitions if t.job_id == job["job_id"]]

        assert [None, JobStatus.WAITING, JobStatus.RUNNING] == [
            t.old_status for t in steps
        ]
        assert JobStatus(steps[-1].new_status).is_final  # type: ignore[arg-type]
        assert START < steps[1].at.timestamp() < steps[2].at.timestamp() < START + 3600
        assert emulator.jobs(pid)[0]["status_last_updated_at"] == int(
            steps[2].at.timestamp()
        )
