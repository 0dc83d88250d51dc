"""The checkpoint stores, SQLite and a real Redis server, and a watch resumed
from them after a crash, a clean stop, and changes made while nobody watched."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from _redis import redis_server
from ief_jobs import (
    Checkpoint,
    JobEvent,
    JobStatus,
    RedisCheckpoint,
    SqliteCheckpoint,
)
from ief_jobs.checkpoint import ProjectChanges, SavedProject
from test_watch import Project, _job, _many


@pytest.fixture(name="redis_url", scope="module")
def _redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(name="store", params=["sqlite", "redis"])
async def _store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Checkpoint]:
    if request.param == "sqlite":
        async with SqliteCheckpoint(tmp_path / "watch.db") as store:
            yield store
    else:
        url = request.getfixturevalue("redis_url")
        async with RedisCheckpoint.from_url(url, prefix=uuid.uuid4().hex) as store:
            yield store


class TestStores:
    async def test_save_load_and_mark_taken(self, store: Checkpoint) -> None:
        """A project never saved is None; a save is read back; a later save
        changes only what it names and replaces the pending events."""
        assert await store.load("p1") is None
        odd = bytes(range(256))  # records are opaque: any byte survives
        await store.save(
            [
                ProjectChanges(
                    "p1", {"a": b"A", "b": odd, "c": b"C"}, (), [b"e1", b"", odd]
                ),
                ProjectChanges("p2"),
            ]
        )
        await store.mark_taken("p1", 2)

        assert SavedProject({"a": b"A", "b": odd, "c": b"C"}, [b"e1", b"", odd], 2) == (
            await store.load("p1")
        )
        assert SavedProject({}, [], 0) == await store.load("p2")

        await store.save([ProjectChanges("p1", {"a": b"A2", "d": b"D"}, ["c"], [b"x"])])

        assert SavedProject({"a": b"A2", "b": odd, "d": b"D"}, [b"x"], 0) == (
            await store.load("p1")
        )

    async def test_closing_twice_is_fine(self, store: Checkpoint) -> None:
        await store.aclose()
        await store.aclose()


class TestSqlite:
    async def test_a_reopened_file_holds_what_was_saved_in_wal_mode(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "state.db"
        async with SqliteCheckpoint(path) as store:
            await store.save([ProjectChanges("p1", {"a": b"A"}, (), [b"e"])])
            await store.mark_taken("p1", 1)
        async with SqliteCheckpoint(path) as again:
            assert SavedProject({"a": b"A"}, [b"e"], 1) == await again.load("p1")
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert ("wal",) == db.execute("PRAGMA journal_mode").fetchone()

    async def test_a_closed_store_refuses_work(self, tmp_path: Path) -> None:
        store = SqliteCheckpoint(tmp_path / "state.db")
        await store.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await store.load("p1")


class TestRedis:
    def test_repr_shows_no_password(self) -> None:
        store = RedisCheckpoint.from_url("redis://:hunter2@127.0.0.1:1/0")
        assert "hunter2" not in repr(store)
        assert "RedisCheckpoint(prefix='ief-jobs')" == repr(store)

    async def test_keys_share_the_project_slot(self, redis_url: str) -> None:
        """A project's keys carry it as a hash tag: one slot in a cluster."""
        prefix = uuid.uuid4().hex
        async with RedisCheckpoint.from_url(redis_url, prefix=prefix) as store:
            await store.save([ProjectChanges("p1", {"a": b"A"})])
            keys = sorted(await store._client.keys(f"{prefix}:*"))

        assert [f"{prefix}:{{p1}}:jobs".encode(), f"{prefix}:{{p1}}:meta".encode()] == (
            keys
        )

    async def test_a_replacement_with_its_own_client_resumes(
        self, redis_url: str
    ) -> None:
        """A shard stopped on one machine, restarted on another: the new
        process's own client reads the state the old one left."""
        prefix = uuid.uuid4().hex
        project = Project(_many(10, unfinished=[8, 9]))
        async with RedisCheckpoint.from_url(redis_url, prefix=prefix) as here:
            first, got = await _two_of_four(project, here)
            await first.aclose()
        async with RedisCheckpoint.from_url(redis_url, prefix=prefix) as there:
            resumed = await _resume(project, there, 2)

        assert FOUR == _kinds([*got, *resumed])


# -- a watch that resumes --------------------------------------------------------


class Crashing:
    """A checkpoint that dies at a moment the test picks: from then on nothing
    reaches the store, as if the process had been killed."""

    def __init__(self, store: Checkpoint) -> None:
        self.store = store
        self.dead = False
        self.saved: list[Sequence[ProjectChanges]] = []

    async def claim(self, project_ids: Sequence[str], *, ttl: float) -> None:
        await self.store.claim(project_ids, ttl=ttl)

    async def renew(self) -> None:
        if not self.dead:
            await self.store.renew()

    def location(self, project_id: str) -> str:
        return self.store.location(project_id)

    async def load(self, project_id: str) -> SavedProject | None:
        return await self.store.load(project_id)

    async def save(self, changes: Sequence[ProjectChanges]) -> None:
        if not self.dead:
            self.saved.append(changes)
            await self.store.save(changes)

    async def mark_taken(self, project_id: str, taken: int) -> None:
        if not self.dead:
            await self.store.mark_taken(project_id, taken)

    async def aclose(self) -> None:
        """The test closes the store itself."""


def _kinds(events: Sequence[JobEvent]) -> list[tuple[str, str | None]]:
    return [(e.kind.value, e.job and e.job.job_id) for e in events]


async def _resume(project: Project, store: Checkpoint, count: int) -> list[JobEvent]:
    """The first *count* events of a new watch on *store*."""
    project.polls = None
    stream = project.watch(checkpoint=store)
    async with contextlib.aclosing(stream):
        return [await anext(stream) for _ in range(count)]


async def _two_of_four(
    project: Project, checkpoint: Checkpoint
) -> tuple[AsyncGenerator[JobEvent, None], list[JobEvent]]:
    """A watch whose second poll has four events; the first two taken."""
    stream = project.watch(checkpoint=checkpoint)
    task = asyncio.ensure_future(anext(stream))
    await project.polled(1)
    project.jobs["job-8"] = _job(8, JobStatus.SUCCESSFUL)
    project.jobs["job-9"] = _job(9, JobStatus.FAILED)
    project.go()
    return stream, [await task, await anext(stream)]


FOUR = [
    ("status_changed", "job-8"),
    ("finished", "job-8"),
    ("status_changed", "job-9"),
    ("finished", "job-9"),
]


class TestResume:
    async def test_after_a_crash_only_the_event_in_hand_comes_again(
        self, store: Checkpoint
    ) -> None:
        """Killed while handling the second of a poll's four events: the next
        run starts with that one (same id), then the two never delivered."""
        project = Project(_many(10, unfinished=[8, 9]))
        crashing = Crashing(store)
        first, got = await _two_of_four(project, crashing)
        crashing.dead = True  # the process dies here, event 2 in hand
        await first.aclose()  # (what a real crash never runs: it changes nothing)

        resumed = await _resume(project, store, 3)

        assert FOUR[:2] == _kinds(got)
        assert FOUR[1:] == _kinds(resumed)
        assert got[1].event_id == resumed[0].event_id
        assert got[1] == resumed[0]

    async def test_after_a_clean_stop_nothing_comes_again(
        self, store: Checkpoint
    ) -> None:
        """aclose() with the second event in hand: it counts as taken."""
        project = Project(_many(10, unfinished=[8, 9]))
        first, got = await _two_of_four(project, store)
        await first.aclose()

        resumed = await _resume(project, store, 2)

        assert FOUR[:2] == _kinds(got)
        assert FOUR[2:] == _kinds(resumed)

    async def test_what_changed_while_nobody_watched_is_told(
        self, store: Checkpoint
    ) -> None:
        """Created, status_changed from the status last told, finished and
        deleted: all on the first poll of the next run, none at its start."""
        project = Project(_many(10, unfinished=[7, 8, 9]))
        first = project.watch(checkpoint=store)
        task = asyncio.ensure_future(anext(first))
        await project.polled(1)
        project.jobs["job-9"] = _job(9, JobStatus.RUNNING, done=3)
        project.go()
        assert [("progress", "job-9")] == _kinds([await task])
        await first.aclose()

        # while nobody watches
        project.jobs["job-8"] = _job(8, JobStatus.TIMED_OUT)
        del project.jobs["job-2"]
        del project.jobs["job-7"]
        project.jobs["job-10"] = _job(10, JobStatus.WAITING)
        got = await _resume(project, store, 5)

        assert [
            ("status_changed", "job-8"),
            ("finished", "job-8"),
            ("created", "job-10"),
            ("deleted", "job-2"),
            ("deleted", "job-7"),
        ] == _kinds(got)
        assert JobStatus.RUNNING == got[0].old_status

    async def test_a_poll_writes_what_changed_not_the_whole_state(
        self, store: Checkpoint
    ) -> None:
        """The baseline writes every job; a poll that sees two change writes
        those two, and its four events."""
        project = Project(_many(1000, unfinished=[998, 999]))
        recording = Crashing(store)
        stream = project.watch(checkpoint=recording)
        async with contextlib.aclosing(stream):
            task = asyncio.ensure_future(anext(stream))
            await project.polled(1)
            _two_finish_late(project)
            project.go()
            await task

        baseline, poll = recording.saved
        assert 1000 == len(baseline[0].upsert)
        assert ({"job-998", "job-999"}, 4) == (
            set(poll[0].upsert),
            len(poll[0].pending),
        )
        assert 1000 == len((await store.load("p1") or SavedProject({})).jobs)


def _two_finish_late(project: Project) -> None:
    project.jobs["job-998"] = _job(998, JobStatus.SUCCESSFUL)
    project.jobs["job-999"] = _job(999, JobStatus.STOPPED)


class Broken(Crashing):
    """A store that cannot be reached."""

    async def load(self, project_id: str) -> SavedProject | None:
        raise ConnectionRefusedError(project_id)


async def test_a_store_that_fails_raises_its_own_error(store: Checkpoint) -> None:
    """Not an ExceptionGroup of the polls' workers: the error as it came."""
    stream = Project(_many(3)).watch(checkpoint=Broken(store))
    with pytest.raises(ConnectionRefusedError, match="p1"):
        await anext(stream)
