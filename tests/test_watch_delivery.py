"""
The watch's delivery promise at its edges (issue 20): the event in hand, event
ids of a job that comes back, the state's scope, damaged and foreign state, one
live owner, argument checks and failing fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from aioresponses import aioresponses

from _support import PROJECT
from ief_jobs import (
    AuthenticationError,
    Checkpoint,
    DecodeError,
    IefClient,
    JobEvent,
    JobStatus,
    RedisCheckpoint,
    SqliteCheckpoint,
    StateError,
    Stream,
)
from ief_jobs.checkpoint import ProjectChanges
from test_checkpoint import FOUR, _kinds, _redis_url, _resume, _store  # noqa: F401
from test_show import EXAMPLE, JOB_ID, _show_url
from test_watch import Lister, Project, _job, _many, _Over


class _Handler(Exception):  # noqa: N818 (the consumer's own failure)
    pass


async def _second_of_four(project: Project, store: Checkpoint) -> Stream[JobEvent]:
    """A watch in a Stream, its second poll's four events ready to come."""
    stream = Stream(project.watch(checkpoint=store), redeliver=True)
    task = asyncio.ensure_future(anext(stream))
    await project.polled(1)
    project.jobs["job-8"] = _job(8, JobStatus.SUCCESSFUL)
    project.jobs["job-9"] = _job(9, JobStatus.FAILED)
    project.go()
    await task
    return stream


class TestEventInHand:
    async def test_an_exception_leaving_async_with_keeps_it(
        self, store: Checkpoint
    ) -> None:
        """A handler that raises on the second event: the next run starts with
        that event (issue 20, case 1: it was marked taken)."""
        project = Project(_many(10, unfinished=[8, 9]))
        stream = await _second_of_four(project, store)
        with pytest.raises(_Handler):
            async with stream:
                await anext(stream)  # the second event, then the handler fails
                raise _Handler

        assert FOUR[1:] == _kinds(await _resume(project, store, 3))

    async def test_an_exception_thrown_in_keeps_it(self, store: Checkpoint) -> None:
        """athrow() into the stream: the event in hand comes again."""
        project = Project(_many(10, unfinished=[8, 9]))
        stream = await _second_of_four(project, store)
        with pytest.raises(_Handler):
            await stream.athrow(_Handler())

        assert FOUR[:] == _kinds(await _resume(project, store, 4))

    async def test_break_takes_it(self, store: Checkpoint) -> None:
        """break out of async with is a clean stop: the event in hand is taken."""
        project = Project(_many(10, unfinished=[8, 9]))
        stream = await _second_of_four(project, store)
        async with stream:
            async for _ in stream:
                break

        assert FOUR[2:] == _kinds(await _resume(project, store, 2))

    async def test_cancellation_takes_it(self, store: Checkpoint) -> None:
        """The consumer's task cancelled inside async with: a clean stop."""
        project = Project(_many(10, unfinished=[8, 9]))
        stream = await _second_of_four(project, store)

        handling = asyncio.Event()

        async def consume() -> None:
            async with stream:
                await anext(stream)
                handling.set()
                await asyncio.Event().wait()  # handling it, for ever

        task = asyncio.ensure_future(consume())
        await handling.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        assert FOUR[2:] == _kinds(await _resume(project, store, 2))


class _Pipe:
    """A stdout whose reader goes away at the *fails*-th line."""

    def __init__(self, fails: int) -> None:
        self.buffer = self
        self.lines: list[bytes] = []
        self.fails = fails

    def write(self, line: bytes) -> int:
        if len(self.lines) + 1 == self.fails:
            raise BrokenPipeError(32, "Broken pipe")
        self.lines.append(line)
        return len(line)

    def flush(self) -> None:
        pass


class TestCommandLine:
    async def test_a_line_that_hit_epipe_is_not_taken(
        self, store: Checkpoint, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The CLI's printer: the line whose write failed comes first after a
        restart; the ones written before do not come again (case 2)."""
        from ief_jobs.cli import _print_events  # noqa: PLC0415 (the CLI's own)

        project = Project(_many(10, unfinished=[8, 9]))
        stream = await _second_of_four(project, store)  # the first was printed
        pipe = _Pipe(fails=2)
        monkeypatch.setattr(sys, "stdout", pipe)
        with pytest.raises(BrokenPipeError):
            await _print_events(stream, "jsonl", None)
        monkeypatch.undo()

        assert [FOUR[1][1]] == [
            orjson.loads(line)["job"]["job_id"] for line in pipe.lines
        ]
        assert FOUR[2:] == _kinds(await _resume(project, store, 2))


class TestOccurrences:
    async def test_a_job_that_comes_back_has_a_new_created_id(self) -> None:
        """Listed, omitted, listed again: the second created is a new id, and
        the deleted that follows it another (issue 20, case 4)."""
        a, b = _job(1), _job(2)
        events = await _run(Script([a, b], [a], [a, b], [a]), emit_existing=True)

        assert [
            ("created", "job-1"),
            ("created", "job-2"),
            ("deleted", "job-2"),
            ("created", "job-2"),
            ("deleted", "job-2"),
        ] == _kinds(events)
        assert 5 == len({e.event_id for e in events})

    async def test_the_same_occurrence_has_the_same_id_after_a_restart(
        self, tmp_path: Path
    ) -> None:
        """One run, or two on one state split where the job is gone: the
        same ids."""
        a, b = _job(1), _job(2)
        whole = await _run(Script([a, b], [a], [a, b]), emit_existing=True)
        async with SqliteCheckpoint(tmp_path / "w.db") as state:
            first = await _run(
                Script([a, b], [a]), emit_existing=True, checkpoint=state
            )
        async with SqliteCheckpoint(tmp_path / "w.db") as state:
            second = await _run(Script([a, b]), checkpoint=state)

        assert [e.event_id for e in whole] == [e.event_id for e in first + second]


class Script(Lister):
    """A Lister whose watch ends after its last scripted poll."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if self.done >= len(self.script):
            raise _Over


async def _run(script: Script, **kwargs: object) -> list[JobEvent]:
    """The events of every poll of *script*."""
    events: list[JobEvent] = []
    stream = script.watch(**kwargs)
    async with contextlib.aclosing(stream):
        with contextlib.suppress(_Over):
            async for event in stream:
                events.append(event)  # noqa: PERF401 (keep those before the end)
    return events


class TestScope:
    async def test_a_state_for_another_job_type_is_refused(
        self, store: Checkpoint
    ) -> None:
        """Kept for node_upgrade, opened for deployment_deploy: one StateError
        naming the state and the setting, nothing emitted (case 3)."""
        project = Project(_many(10, unfinished=[8, 9]))
        await _resume_quietly(project, store, scope={"job_type": "node_upgrade"})
        del project.jobs["job-3"]
        before = project.requests()

        stream = project.watch(
            checkpoint=store, scope={"job_type": "deployment_deploy"}
        )
        with pytest.raises(StateError) as info:
            await anext(stream)

        message = str(info.value)
        assert "job_type='node_upgrade'" in message
        assert "'deployment_deploy'" in message
        assert store.location("p1") in message
        assert "\n" not in message
        assert before == project.requests()

    async def test_reset_state_starts_over_without_false_events(
        self, store: Checkpoint
    ) -> None:
        """--reset-state: a new baseline, no deleted/created for the old jobs."""
        project = Project(_many(10, unfinished=[8, 9]))
        await _resume_quietly(project, store, scope={"job_type": "node_upgrade"})
        project.jobs = {j.job_id: j for j in _many(4, unfinished=[3])}  # other jobs
        await _resume_quietly(
            project, store, scope={"job_type": "deployment_deploy"}, reset_state=True
        )
        project.jobs["job-3"] = _job(3, JobStatus.FAILED)

        project.polls = None
        stream = project.watch(
            checkpoint=store, scope={"job_type": "deployment_deploy"}
        )
        async with contextlib.aclosing(stream):
            got = [await anext(stream) for _ in range(2)]

        assert [("status_changed", "job-3"), ("finished", "job-3")] == _kinds(got)

    async def test_only_unfinished_is_part_of_the_scope(
        self, store: Checkpoint
    ) -> None:
        project = Project(_many(3))
        await _resume_quietly(project, store)
        with pytest.raises(StateError, match="only_unfinished=False"):
            await anext(project.watch(checkpoint=store, only_unfinished=True))


async def _resume_quietly(
    project: Project, store: Checkpoint, **kwargs: object
) -> None:
    """One poll of a watch on *store* (a baseline: it yields nothing), closed."""
    project.polls = 1
    stream = project.watch(checkpoint=store, **kwargs)
    async with contextlib.aclosing(stream):
        with contextlib.suppress(Exception):
            await anext(stream)
    project.polls = None
    project.sleeps = 0


class TestDamagedState:
    async def _saved(self, store: Checkpoint) -> None:
        await _resume_quietly(Project(_many(3, unfinished=[2])), store)

    async def test_a_bad_record_names_the_state(self, store: Checkpoint) -> None:
        """A record that is not JSON: StateError naming the file or key and
        the job (case 7: orjson.JSONDecodeError)."""
        await self._saved(store)
        await store.save([ProjectChanges("p1", {"job-1": b"\xff not json"})])

        with pytest.raises(StateError) as info:
            await anext(Project(_many(3)).watch(checkpoint=store))

        assert store.location("p1") in str(info.value)
        assert "job job-1 is damaged" in str(info.value)

    async def test_a_negative_taken_names_the_state(self, tmp_path: Path) -> None:
        """taken = -1 in the file: StateError, not KeyError: 'kind'."""
        path = tmp_path / "w.db"
        async with SqliteCheckpoint(path) as state:
            await self._saved(state)
        with sqlite3.connect(path) as db:
            db.execute("UPDATE ief_projects SET taken = -1")

        async with SqliteCheckpoint(path) as state:
            with pytest.raises(StateError, match=f"state file {path}.*damaged"):
                await anext(Project(_many(3)).watch(checkpoint=state))

    @pytest.mark.parametrize(
        "foreign",
        [
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
            "PRAGMA application_id = 1234",
        ],
    )
    async def test_another_applications_file_is_refused_unchanged(
        self, tmp_path: Path, foreign: str
    ) -> None:
        """Not ours (other tables, or another application id): refused with
        the file's bytes as they were; no table added, no WAL (case 7)."""
        path = tmp_path / "app.db"
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute(foreign)
            db.commit()
        before = path.read_bytes()

        checkpoint = SqliteCheckpoint(path)
        try:
            with pytest.raises(StateError, match="another application's database"):
                await anext(Project(_many(3)).watch(checkpoint=checkpoint))
        finally:
            await checkpoint.aclose()

        assert before == path.read_bytes()
        assert [path] == await asyncio.to_thread(lambda: list(tmp_path.iterdir()))

    async def test_a_file_of_the_first_layout_is_kept(self, tmp_path: Path) -> None:
        """A state file an earlier ief-jobs wrote (no scope, no application
        id) is ours: upgraded in place, its projects resumed."""
        path = tmp_path / "w.db"
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute(
                "CREATE TABLE ief_projects (project_id TEXT PRIMARY KEY,"
                " pending BLOB NOT NULL, taken INTEGER NOT NULL)"
            )
            db.execute(
                "CREATE TABLE ief_jobs (project_id TEXT NOT NULL, job_id TEXT NOT NULL,"
                " record BLOB NOT NULL, PRIMARY KEY (project_id, job_id)) WITHOUT ROWID"
            )
            db.execute("INSERT INTO ief_projects VALUES ('p1', x'', 0)")
            db.commit()

        async with SqliteCheckpoint(path) as state:
            saved = await state.load("p1")

        assert saved is not None
        assert (b"", 0) == (saved.scope, saved.taken)

    async def test_a_file_that_is_not_sqlite_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_bytes(b"my notes, not a database" * 100)

        with pytest.raises(StateError, match=f"state file {path} cannot be used"):
            async with SqliteCheckpoint(path):
                pass
        assert b"my notes, not a database" * 100 == path.read_bytes()

    def test_state_error_pickles(self) -> None:
        import pickle  # noqa: PLC0415

        error = StateError(reason="state file w.db is damaged", project_id="p1")
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
        assert (StateError, str(error), "p1") == (
            type(copy),
            str(copy),
            copy.project_id,
        )


class TestOneOwner:
    async def test_a_second_sqlite_watcher_fails_at_start(self, tmp_path: Path) -> None:
        """A second process on the same file: StateError naming the file and
        the holder's pid (case 6)."""
        path = tmp_path / "w.db"
        async with SqliteCheckpoint(path) as state:
            await state.claim(["p1"], ttl=10)
            probe = (
                "import asyncio, sys\n"
                "from ief_jobs import SqliteCheckpoint, StateError\n"
                "async def main():\n"
                "    async with SqliteCheckpoint(sys.argv[1]) as s:\n"
                "        pass\n"
                "try:\n    asyncio.run(main())\n"
                "except StateError as e:\n    print(e)\n"
            )
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", probe, str(path), stdout=subprocess.PIPE
            )
            out, _ = await child.communicate()

        assert (
            f"state file {path} is in use by another watcher (pid {os.getpid()})\n"
            == out.decode()
        )

    async def test_a_sqlite_file_is_free_once_closed(self, tmp_path: Path) -> None:
        async with SqliteCheckpoint(tmp_path / "w.db") as state:
            await state.claim(["p1"], ttl=10)
        async with SqliteCheckpoint(tmp_path / "w.db") as state:
            await state.claim(["p1"], ttl=10)

    async def test_overlapping_redis_watchers(self, redis_url: str) -> None:
        """Shards of two counts overlapping on p2: the second fails at start
        naming p2 and frees what it took; the first's stop frees all."""
        prefix = uuid.uuid4().hex
        async with (
            RedisCheckpoint.from_url(redis_url, prefix=prefix) as one,
            RedisCheckpoint.from_url(redis_url, prefix=prefix) as two,
        ):
            await one.claim(["p1", "p2"], ttl=30)
            with pytest.raises(StateError, match=r"project p2: .*\{p2\}:owner"):
                await two.claim(["p3", "p2"], ttl=30)
            async with RedisCheckpoint.from_url(redis_url, prefix=prefix) as three:
                await three.claim(["p3"], ttl=30)  # p3 was freed
        async with RedisCheckpoint.from_url(redis_url, prefix=prefix) as four:
            await four.claim(["p1", "p2"], ttl=30)

    async def test_a_holder_that_lost_its_lease_cannot_write(
        self, redis_url: str
    ) -> None:
        """Paused past its lease while another took over: its next write
        fails, and the watch stops without reporting."""
        import redis.asyncio  # noqa: PLC0415

        prefix = uuid.uuid4().hex
        project = Project(_many(10, unfinished=[8, 9]))
        async with (
            RedisCheckpoint.from_url(redis_url, prefix=prefix) as paused,
            RedisCheckpoint.from_url(redis_url, prefix=prefix) as other,
            redis.asyncio.Redis.from_url(redis_url) as raw,
        ):
            stream = project.watch(checkpoint=paused)
            task = asyncio.ensure_future(anext(stream))
            await project.polled(1)
            await raw.pexpire(f"{prefix}:{{p1}}:owner", 1)  # its time ran out
            await asyncio.sleep(0.005)
            await other.claim(["p1"], ttl=30)
            project.jobs["job-8"] = _job(8, JobStatus.SUCCESSFUL)
            project.go()
            with pytest.raises(StateError, match=r"lease .* was lost"):
                await task
            await stream.aclose()

            with pytest.raises(StateError, match="lost"):
                await paused.save([ProjectChanges("p1", {"x": b"y"})])
            assert await raw.hget(f"{prefix}:{{p1}}:jobs", "x") is None


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"checkpoint": "watch.db"}, TypeError, "SqliteCheckpoint"),
            ({"checkpoint": Path("watch.db")}, TypeError, "SqliteCheckpoint"),
            ({"checkpoint": object()}, TypeError, "checkpoint"),
            ({"emit_existing": "no"}, TypeError, "emit_existing"),
            ({"only_unfinished": 1}, TypeError, "only_unfinished"),
            ({"reset_state": None}, TypeError, "reset_state"),
            ({"interval": 1e-9}, ValueError, "interval"),
            ({"interval": 10**400}, ValueError, "interval"),
            ({"interval": float("inf")}, ValueError, "interval"),
            ({"interval": "5"}, TypeError, "interval"),
            ({"interval": True}, TypeError, "interval"),
            ({"report_after": 2.5}, TypeError, "report_after"),
            ({"lease_ttl": 5}, ValueError, "lease_ttl"),  # not above interval 10
            ({"lease_ttl": "60"}, TypeError, "lease_ttl"),
        ],
    )
    def test_refused_at_the_call(
        self, kwargs: dict[str, object], error: type[Exception], match: str
    ) -> None:
        """Each wrong argument is refused before any request (case 8)."""
        project = Project(_many(3))
        with pytest.raises(error, match=match):
            project.watch(**kwargs)
        assert 0 == project.requests()

    def test_watch_jobs_refuses_a_path(
        self, client: IefClient, mocked: aioresponses
    ) -> None:
        with pytest.raises(TypeError, match="SqliteCheckpoint"):
            client.watch_jobs(["p1"], checkpoint="watch.db")  # type: ignore[arg-type]
        assert 0 == client.requests_sent
        del mocked


class TestFailFast:
    async def test_a_refused_token_is_reported_at_once_then_raised(self) -> None:
        """401 on the first poll of the only project: project_failed at once,
        then the error (case 9: nothing for three polls, then forever)."""
        refused = AuthenticationError(status=401, project_id="p1")
        lister = Lister(refused)
        stream = lister.watch(report_after=3)

        async with contextlib.aclosing(stream):
            failed = await anext(stream)
            with pytest.raises(AuthenticationError):
                await anext(stream)

        assert ("project_failed", 1, refused) == (
            failed.kind.value,
            failed.failures,
            failed.error,
        )
        assert 0 == lister.done  # no second poll


class TestGetJobChecksTheAnswer:
    async def test_an_answer_about_another_job_is_refused(
        self, client: IefClient, mocked: aioresponses
    ) -> None:
        """The body is job B's: DecodeError naming both ids (case 5)."""
        other = {**EXAMPLE, "job_id": "job-B"}
        mocked.get(_show_url(), body=orjson.dumps(other))

        with pytest.raises(DecodeError) as info:
            await client.get_job(PROJECT, JOB_ID)

        assert JOB_ID in str(info.value)
        assert "job-B" in str(info.value)

    async def test_an_answer_about_another_project_is_refused(
        self, client: IefClient, mocked: aioresponses
    ) -> None:
        """Where the body says its project, it must be the one asked about."""
        mocked.get(_show_url(), body=orjson.dumps({**EXAMPLE, "project_id": "p-other"}))

        with pytest.raises(DecodeError, match=f"{PROJECT}.*p-other"):
            await client.get_job(PROJECT, JOB_ID)
