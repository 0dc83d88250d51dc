"""RedisStreamSink against a real redis-server: each change once in the stream."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest
import redis.asyncio

from ief_jobs import (
    Checkpoint,
    JobEvent,
    JobStatus,
    RedisCheckpoint,
    RedisStreamSink,
    SqliteCheckpoint,
)
from ief_jobs.checkpoint import ProjectChanges
from test_checkpoint import FOUR, Crashing, _kinds, _redis_url  # noqa: F401
from test_watch import Project, _job, _many


@pytest.fixture(name="raw")
async def _raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    async with redis.asyncio.Redis.from_url(redis_url) as client:
        yield client


async def _entries(raw: redis.asyncio.Redis, stream: str) -> list[dict[str, object]]:
    return [orjson.loads(fields[b"event"]) for _, fields in await raw.xrange(stream)]


def _stream_kinds(entries: Sequence[dict[str, object]]) -> list[tuple[str, object]]:
    return [(str(e["kind"]), e["job"] and e["job"]["job_id"]) for e in entries]  # type: ignore[index]


class Dying:
    """A sink whose first write never happens: the process died before it."""

    def __init__(self, sink: RedisStreamSink) -> None:
        self.sink = sink
        self.died = False

    async def write(self, events: Sequence[JobEvent]) -> None:
        if events and not self.died:
            self.died = True
            raise _Killed
        await self.sink.write(events)

    async def commit(
        self,
        events: Sequence[JobEvent],
        checkpoint: Checkpoint,
        changes: Sequence[ProjectChanges],
    ) -> bool:
        return await self.sink.commit(events, checkpoint, changes)


class _Killed(Exception):  # noqa: N818 (a signal, not an error)
    pass


async def _two_polls(
    project: Project, checkpoint: Checkpoint | None = None, sink: object = None
) -> list[JobEvent]:
    """A baseline, then a poll whose four events the sink gets; all yielded."""
    stream = project.watch(checkpoint=checkpoint, sink=sink)
    async with contextlib.aclosing(stream):
        project.polls = None
        pending = asyncio.ensure_future(anext(stream))
        await project.polled(1)
        project.jobs["job-8"] = _job(8, JobStatus.SUCCESSFUL)
        project.jobs["job-9"] = _job(9, JobStatus.FAILED)
        project.go()
        return [await pending] + [await anext(stream) for _ in range(3)]


class TestRedisStreamSink:
    async def test_an_id_it_holds_is_dropped_within_the_window(
        self, redis_url: str, raw: redis.asyncio.Redis
    ) -> None:
        name = uuid.uuid4().hex
        events = await _events()
        async with RedisStreamSink.from_url(redis_url, stream=name, window=3) as sink:
            await sink.write(events[:2])
            await sink.write(events)  # the first two again, then two new
            await sink.write(events[2:])  # held: dropped

            assert FOUR == _stream_kinds(await _entries(raw, name))
            await sink.write(events[:1])  # forgotten: beyond the window of 3
        assert 5 == await raw.xlen(name)
        assert 3 == await raw.scard(f"{name}:ids")

    async def test_a_sink_without_a_checkpoint_is_refused(self, redis_url: str) -> None:
        """Without a state each start is a silent baseline, and what changed
        while the watch was down would never reach the sink: refused at the
        call, before any request."""
        project = Project(_many(3))
        async with RedisStreamSink.from_url(redis_url, stream="s") as sink:
            with pytest.raises(ValueError, match="a sink needs a checkpoint"):
                project.watch(sink=sink)
        assert 0 == project.requests()

    async def test_with_a_redis_checkpoint_one_transaction(
        self, redis_url: str, raw: redis.asyncio.Redis
    ) -> None:
        """Same server: the events are in the stream and nothing is pending
        in the state (both were one transaction)."""
        name, prefix = uuid.uuid4().hex, uuid.uuid4().hex
        project = Project(_many(10, unfinished=[8, 9]))
        async with (
            RedisCheckpoint.from_url(redis_url, prefix=prefix) as state,
            RedisStreamSink.from_url(redis_url, stream=name) as sink,
        ):
            got = await _two_polls(project, state, sink)
            saved = await state.load("p1")

        assert FOUR == _kinds(got)
        assert FOUR == _stream_kinds(await _entries(raw, name))
        assert saved is not None
        assert [] == list(saved.pending)

    async def test_killed_before_the_write_the_restart_writes_it_once(
        self, redis_url: str, raw: redis.asyncio.Redis, tmp_path: Path
    ) -> None:
        """SQLite state: the state was saved, the stream write never happened;
        the next run writes the four events, once."""
        name = uuid.uuid4().hex
        project = Project(_many(10, unfinished=[8, 9]))
        async with RedisStreamSink.from_url(redis_url, stream=name) as sink:
            async with SqliteCheckpoint(tmp_path / "w.db") as state:
                with pytest.raises(_Killed):
                    await _two_polls(project, state, Dying(sink))
            assert [] == await _entries(raw, name)
            async with SqliteCheckpoint(tmp_path / "w.db") as state:
                await _first_poll(project, state, sink)

        assert FOUR == _stream_kinds(await _entries(raw, name))

    async def test_killed_before_marking_taken_nothing_is_written_twice(
        self, redis_url: str, raw: redis.asyncio.Redis, tmp_path: Path
    ) -> None:
        """Written, but the process died before the state knew: the next run
        writes them again, and the sink drops every one."""
        name = uuid.uuid4().hex
        project = Project(_many(10, unfinished=[8, 9]))
        async with RedisStreamSink.from_url(redis_url, stream=name) as sink:
            async with SqliteCheckpoint(tmp_path / "w.db") as store:
                crashing = Crashing(store)
                original = crashing.mark_taken

                async def dead(project_id: str, taken: int) -> None:
                    crashing.dead = True
                    await original(project_id, taken)

                crashing.mark_taken = dead  # type: ignore[method-assign]
                await _two_polls(project, crashing, sink)
            async with SqliteCheckpoint(tmp_path / "w.db") as state:
                assert 4 == len((await state.load("p1") or _nothing()).pending)
                await _first_poll(project, state, sink)

        assert FOUR == _stream_kinds(await _entries(raw, name))


def _nothing() -> object:
    pytest.fail("nothing saved")


async def _first_poll(project: Project, state: Checkpoint, sink: object) -> None:
    """Start a watch on *state*: what was pending, then one poll."""
    project.polls = 1
    project.sleeps = 0
    stream = project.watch(checkpoint=state, sink=sink)
    async with contextlib.aclosing(stream):
        with contextlib.suppress(Exception):
            async for _ in stream:
                pass


async def _events() -> list[JobEvent]:
    """FOUR's events, from a watch with no state."""
    return await _two_polls(Project(_many(10, unfinished=[8, 9])))
