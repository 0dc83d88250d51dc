"""What the ief-jobs command shows a person: widths, ids cut in the middle, hints."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from _support import served_in_thread
from ief_jobs import (
    BatchJob,
    IefClient,
    IefError,
    JobEvent,
    JobEventKind,
    JobStatus,
    JobType,
    TokenAuth,
)
from ief_jobs.cli import _event_line, _jobs_table, _shorten
from ief_jobs.emulator import Emulator

PROJECT = "e4722bb8341306a3f9bd9caf33f206d9"
WIDTHS = [80, 200]


def _job(
    name: str = "nightly-gateway-rollout-7292", status: str = "Running"
) -> BatchJob:
    when = datetime(2022, 11, 4, 8, 23, 18, tzinfo=UTC)
    return BatchJob(
        job_id="7db5651b-a5b2-4c1e-9d0b-3f4e8f2a1c55",
        job_name=name,
        job_type=JobType.DEPLOYMENT_UPGRADE,
        description="",
        created_at=when,
        status=status,
        status_last_updated_at=when,
        task_total_count=100,
        task_success_count=100,
        task_failed_count=0,
    )


def _events() -> list[JobEvent]:
    when = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)
    old = _job(status=JobStatus.RUNNING)
    new = _job(status=JobStatus.PARTIALLY_SUCCESSFUL)
    finish = [
        JobEvent(kind=kind, project_id=PROJECT, job=new, previous=old, observed_at=when)
        for kind in (JobEventKind.STATUS_CHANGED, JobEventKind.FINISHED)
    ]
    return [
        *finish,
        JobEvent(
            kind=JobEventKind.PROGRESS, project_id=PROJECT, job=old, observed_at=when
        ),
        JobEvent(
            kind=JobEventKind.PROJECT_FAILED,
            project_id=PROJECT,
            job=None,
            observed_at=when,
            error=IefError(project_id=PROJECT),
            failures=3,
        ),
    ]


class TestShorten:
    @given(text=st.text(min_size=0, max_size=64), width=st.integers(3, 70))
    def test_fits_and_keeps_both_ends(self, text: str, width: int) -> None:
        """A cut text fits its width and keeps its first and last characters."""
        short = _shorten(text, width)

        assert len(short) <= width
        if len(text) <= width:
            assert text == short
        else:
            assert (text[0], text[-1]) == (short[0], short[-1])
            assert "\u2026" in short

    def test_a_project_id(self) -> None:
        """A project id of 32 hex digits cut to 12 keeps 6 and 5 of its ends."""
        assert "e4722b\u2026206d9" == _shorten(PROJECT, 12)


class TestWatchLines:
    @pytest.mark.parametrize("width", WIDTHS)
    def test_each_line_fits(self, width: int) -> None:
        """Every kind of watch line fits the terminal's width."""
        lines = [_event_line(event, width=width) for event in _events()]

        assert [] == [line for line in lines if len(line) > width]

    def test_at_80_the_ids_keep_their_ends(self) -> None:
        """At 80 columns the project id is cut in the middle, both ends kept."""
        line = _event_line(_events()[0], width=80)

        assert f"{PROJECT[:4]}\u2026{PROJECT[-4:]}" in line
        assert line.endswith("100/0/100")

    def test_at_200_nothing_is_cut(self) -> None:
        """At 200 columns the line shows the whole id, name and change."""
        line = _event_line(_events()[0], width=200)

        assert "\u2026" not in line
        assert PROJECT in line
        assert "nightly-gateway-rollout-7292" in line
        assert "Running -> Partially_successful" in line

    def test_the_terminal_width_is_the_default(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a width, a line fits the terminal (COLUMNS)."""
        monkeypatch.setenv("COLUMNS", "80")

        assert 80 >= len(_event_line(_events()[0]))


class TestJobsTable:
    def _render(self, width: int) -> list[str]:
        jobs = [
            (PROJECT, _job()),
            (PROJECT[::-1], _job("camera", status=JobStatus.PARTIALLY_SUCCESSFUL)),
        ]
        console = Console(width=width, record=True)
        console.print(_jobs_table(jobs, title="2 batch jobs", width=width))
        return console.export_text().splitlines()

    @pytest.mark.parametrize("width", WIDTHS)
    def test_fits(self, width: int) -> None:
        """No line of the table is wider than the terminal."""
        assert [] == [line for line in self._render(width) if len(line) > width]

    def test_at_80_ids_keep_their_ends_and_statuses_stay_whole(self) -> None:
        """At 80 columns ids are cut in the middle; a status is never cut."""
        text = "\n".join(self._render(80))

        assert f"{PROJECT[:4]}\u2026{PROJECT[-4:]}" in text
        assert "Partially_successful" in text
        assert "..." not in text  # rich's own cut at the end is not used

    def test_at_200_nothing_is_cut(self) -> None:
        """At 200 columns every id, name, type and time is whole."""
        text = "\n".join(self._render(200))

        assert "\u2026" not in text
        assert PROJECT in text
        assert "nightly-gateway-rollout-7292" in text
        assert "deployment_upgrade" in text
        assert "2022-11-04 08:23:18" in text


@pytest.fixture(name="served", scope="module")
def _served() -> Iterator[Emulator]:
    with served_in_thread(Emulator(projects=1, jobs=20)) as emulator:
        yield emulator


def _watch(served: Emulator, output: str) -> subprocess.Popen[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HUAWEICLOUD_", "IEF_"))
    }
    env.update(IEF_ENDPOINT=served.base_url, IEF_TOKEN=served.token)
    command = [str(Path(sys.executable).parent / "ief-jobs"), "watch"]
    return subprocess.Popen(  # noqa: S603 (our own command)
        [*command, "--format", output, "--interval", "15", *served.project_ids],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(
    process: subprocess.Popen[str], served: Emulator, before: int
) -> tuple[str, str]:
    """Ctrl-C (a clean stop) once the watch has begun its first poll."""
    deadline = time.monotonic() + 20
    while served.stats.requests == before and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert 0 == process.returncode, stderr
    return stdout, stderr


class TestWatchNote:
    def test_people_hear_once_that_the_first_poll_is_a_baseline(
        self, served: Emulator
    ) -> None:
        """In lines (a terminal's format) stderr says why nothing prints at first."""
        before = served.stats.requests
        process = _watch(served, "lines")
        assert process.stderr is not None
        note = process.stderr.readline()
        _, rest = _stop(process, served, before)

        assert note.startswith("ief-jobs: the first poll is a baseline")
        assert "a poll every 15 s" in note
        assert "ief-jobs emulator --running" in note
        assert "baseline" not in rest

    def test_a_pipe_hears_nothing_of_it(self, served: Emulator) -> None:
        """In jsonl (a pipe's format) stderr carries no note."""
        before = served.stats.requests
        process = _watch(served, "jsonl")
        _, stderr = _stop(process, served, before)

        assert "" == stderr


class _Enough(Exception):  # noqa: N818 (a signal, not an error)
    pass


async def test_one_finish_yields_status_changed_then_finished() -> None:
    """A job that finishes yields two events, status_changed then finished, alike."""
    async with (
        Emulator(projects=1, jobs=50) as emulator,
        IefClient(emulator.base_url, auth=TokenAuth(emulator.token)) as ief,
    ):
        project_id = emulator.project_ids[0]
        jobs = await ief.list_jobs(project_id)
        running = next(job for job in jobs if job.status == JobStatus.RUNNING)
        polls = 0

        async def between_polls(_: float) -> None:
            nonlocal polls
            polls += 1
            if polls == 1:
                emulator.set_status(project_id, running.job_id, JobStatus.FAILED)
            else:  # the poll after the finish is over: so is the test
                raise _Enough

        events = ief.watch_jobs([project_id], sleep=between_polls)
        seen = []
        with contextlib.suppress(_Enough):
            async with events:
                async for event in events:
                    seen.append(event)  # noqa: PERF401 (kept when the watch ends)

    assert [
        (JobEventKind.STATUS_CHANGED, "Running", "Failed"),
        (JobEventKind.FINISHED, "Running", "Failed"),
    ] == [
        (event.kind, event.old_status, event.new_status)
        for event in seen
        if event.job is not None and event.job.job_id == running.job_id
    ]
