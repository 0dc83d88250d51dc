"""
Where a watch keeps its state between runs: `Checkpoint` and two stores.

A watch (`ief_jobs.watch`) remembers, per project, every job it has seen (to
tell what changed) and the events of its latest poll with how many of them the
consumer took (to resume a poll that was cut off half-delivered). A
`Checkpoint` stores exactly that, per project, as opaque byte strings the watch
encodes itself, and is told only what changed:

* `SqliteCheckpoint`: one file on one machine (SQLite in WAL mode, the
  standard library's driver on a thread of its own). The embedded default.
* `RedisCheckpoint`: a Redis server that shards on several machines share, so
  a replacement for a dead shard, started anywhere, resumes where it stopped
  (needs the ``redis`` extra).

Both write a poll's changes per project in one transaction: a crash leaves a
project as it was before the poll or as it is after it, never half-way.

Nothing here imports from the rest of the package.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, Self, TypeVar, cast

import attrs

from ._closing import AsyncClosing

if TYPE_CHECKING:
    import redis.asyncio
    from redis.typing import EncodableT

__all__ = [
    "Checkpoint",
    "ProjectChanges",
    "RedisCheckpoint",
    "SavedProject",
    "SqliteCheckpoint",
]

T = TypeVar("T")


@attrs.frozen
class SavedProject:
    """
    What a checkpoint holds for one project.

    *jobs* maps each job id to its record, *pending* holds the events of the
    latest poll that changed the project, and *taken* counts how many of those
    the consumer took (the rest are delivered first after a restart).
    """

    jobs: Mapping[str, bytes]
    pending: Sequence[bytes] = ()
    taken: int = 0


@attrs.frozen
class ProjectChanges:
    """
    One poll's changes to one project: jobs to write (*upsert*) and to forget
    (*delete*), and the poll's events (*pending*), which replace the previous
    ones with none of them taken yet.
    """

    project_id: str
    upsert: Mapping[str, bytes] = attrs.field(factory=dict)
    delete: Collection[str] = ()
    pending: Sequence[bytes] = ()


class Checkpoint(Protocol):
    """
    Durable state for `IefClient.watch_jobs`: implement these four to keep it
    elsewhere. Records are opaque bytes; a store never looks inside them.
    """

    async def load(self, project_id: str) -> SavedProject | None:
        """The project as last saved, or None if it never was."""

    async def save(self, changes: Sequence[ProjectChanges]) -> None:
        """Apply each project's changes atomically (each project on its own)."""

    async def mark_taken(self, project_id: str, taken: int) -> None:
        """Record that the consumer took the first *taken* pending events."""

    async def aclose(self) -> None:
        """Release connections and threads. Idempotent."""


_SCHEMA: Final = (
    (
        "CREATE TABLE IF NOT EXISTS ief_projects (project_id TEXT PRIMARY KEY,"
        " pending BLOB NOT NULL, taken INTEGER NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS ief_jobs (project_id TEXT NOT NULL,"
        " job_id TEXT NOT NULL, record BLOB NOT NULL,"
        " PRIMARY KEY (project_id, job_id)) WITHOUT ROWID"
    ),
)


def _pack_list(items: Sequence[bytes]) -> bytes:
    # length-prefixed: records are opaque and may hold any byte
    return b"".join(len(item).to_bytes(4, "big") + item for item in items)


def _unpack_list(blob: bytes) -> list[bytes]:
    items, at = [], 0
    while at < len(blob):
        size = int.from_bytes(blob[at : at + 4], "big")
        items.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return items


class SqliteCheckpoint(AsyncClosing):
    """
    A watch's state in one SQLite file (WAL mode), for a watch on one machine.

    Each poll writes only what changed: the jobs that appeared, changed or went,
    and the poll's events, in one transaction per poll; taking an event updates
    one row. A project with 100,000 known jobs thus costs a few row writes per
    poll, not a rewrite of its state. WAL with ``synchronous=NORMAL`` keeps
    every committed poll through a crash or ``kill -9`` of the process (a power
    cut may lose the last polls, which the next run then reports again, with
    the same event ids). The standard library's `sqlite3` runs on one thread of
    its own, so the event loop never waits on the disk.

    Example::

        async with SqliteCheckpoint("watch.db") as state:
            async for event in ief.watch_jobs(project_ids, checkpoint=state):
                handle(event)
    """

    __slots__ = ("_closed", "_connection", "_executor", "path")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ief-jobs-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteCheckpoint({str(self.path)!r})"

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            msg = "this SqliteCheckpoint is closed"
            raise RuntimeError(msg)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connect()))

    def _connect(self) -> sqlite3.Connection:
        # on the checkpoint's own thread: sqlite3 connections stay on theirs
        if self._connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                connection.execute(statement)
            self._connection = connection
        return self._connection

    async def __aenter__(self) -> Self:
        await self._run(lambda _: None)  # open (and create) the file now
        return self

    async def aclose(self) -> None:
        """Close the file once pending writes are done. Idempotent."""
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=False)

    async def load(self, project_id: str) -> SavedProject | None:
        """The project as last saved, or None."""

        def load(db: sqlite3.Connection) -> SavedProject | None:
            row = db.execute(
                "SELECT pending, taken FROM ief_projects WHERE project_id = ?",
                (project_id,),
            ).fetchone()
            if row is None:
                return None
            jobs = dict(
                db.execute(
                    "SELECT job_id, record FROM ief_jobs WHERE project_id = ?",
                    (project_id,),
                )
            )
            return SavedProject(jobs, _unpack_list(row[0]), row[1])

        return await self._run(load)

    async def save(self, changes: Sequence[ProjectChanges]) -> None:
        """Write one poll's changes, all projects in one transaction."""

        def save(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                for change in changes:
                    pid = change.project_id
                    db.execute(
                        "INSERT OR REPLACE INTO ief_projects VALUES (?, ?, 0)",
                        (pid, _pack_list(change.pending)),
                    )
                    db.executemany(
                        "INSERT OR REPLACE INTO ief_jobs VALUES (?, ?, ?)",
                        ((pid, job_id, rec) for job_id, rec in change.upsert.items()),
                    )
                    db.executemany(
                        "DELETE FROM ief_jobs WHERE project_id = ? AND job_id = ?",
                        ((pid, job_id) for job_id in change.delete),
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        if changes:
            await self._run(save)

    async def mark_taken(self, project_id: str, taken: int) -> None:
        """Record that the first *taken* pending events were taken."""
        await self._run(
            lambda db: db.execute(
                "UPDATE ief_projects SET taken = ? WHERE project_id = ?",
                (taken, project_id),
            )
        )


class RedisCheckpoint(AsyncClosing):
    """
    A watch's state in Redis, shared by watches on several machines.

    Give each shard of a sharded watch the same server and *prefix*: a
    project's state lives under its own keys (``{prefix}:{project_id}:jobs``,
    a hash of job records, and ``{prefix}:{project_id}:meta``), so whichever
    process watches a project next, after a restart anywhere or a change in the
    number of shards, resumes it. The project id is a Redis Cluster hash tag:
    a project's keys share a slot and each poll's changes to it are one
    ``MULTI``/``EXEC`` transaction. Durability is the server's (``appendonly
    yes`` keeps every write through a server restart).

    Needs the ``redis`` extra (``pip install ief-jobs[redis]``), redis-py's
    asyncio client.

    Example::

        async with RedisCheckpoint.from_url("redis://state:6379/0") as state:
            async for event in ief.watch_jobs(ids, checkpoint=state, shard=(2, 8)):
                handle(event)

    Args:
        client: A ``redis.asyncio.Redis`` to use; the checkpoint does not close
            it (use `from_url` for one it owns).
        prefix: Begins every key, so several watches can share a database.
    """

    __slots__ = ("_client", "_closed", "_owns_client", "prefix")

    def __init__(
        self, client: redis.asyncio.Redis, *, prefix: str = "ief-jobs"
    ) -> None:
        self._client = client
        self._owns_client = False
        self._closed = False
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "ief-jobs") -> RedisCheckpoint:
        """A checkpoint that owns a client for *url* (``redis://host:port/db``)."""
        import redis.asyncio  # noqa: PLC0415 (an optional extra: only when used)

        checkpoint = cls(redis.asyncio.Redis.from_url(url), prefix=prefix)
        checkpoint._owns_client = True
        return checkpoint

    def __repr__(self) -> str:
        # the client's repr may carry a password from its URL: not ours to show
        return f"RedisCheckpoint(prefix={self.prefix!r})"

    async def aclose(self) -> None:
        """Close the client if this checkpoint made it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()

    def _keys(self, project_id: str) -> tuple[str, str]:
        base = f"{self.prefix}:{{{project_id}}}"
        return f"{base}:jobs", f"{base}:meta"

    async def load(self, project_id: str) -> SavedProject | None:
        """The project as last saved, or None."""
        jobs_key, meta_key = self._keys(project_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(meta_key)
            pipe.hgetall(jobs_key)
            meta, jobs = await pipe.execute()
        if not meta:
            return None
        return SavedProject(
            {key.decode(): value for key, value in jobs.items()},
            _unpack_list(meta[b"pending"]),
            int(meta[b"taken"]),
        )

    async def save(self, changes: Sequence[ProjectChanges]) -> None:
        """Write one poll's changes, one transaction per project."""
        for change in changes:
            jobs_key, meta_key = self._keys(change.project_id)
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(
                    meta_key,
                    mapping={"pending": _pack_list(change.pending), "taken": 0},
                )
                if change.upsert:
                    # the client's Mapping is invariant in its key: str is fine
                    records = cast("Mapping[EncodableT, EncodableT]", change.upsert)
                    pipe.hset(jobs_key, mapping=records)
                if change.delete:
                    pipe.hdel(jobs_key, *change.delete)
                await pipe.execute()

    async def mark_taken(self, project_id: str, taken: int) -> None:
        """Record that the first *taken* pending events were taken."""
        await self._client.hset(self._keys(project_id)[1], "taken", taken)
