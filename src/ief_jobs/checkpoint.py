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

Each project's state has one live owner (`Checkpoint.claim`): a SQLite file is
locked for as long as it is open; a Redis project has an owner lease with a
time to live that every write renews, and a write whose lease another watcher
took fails. What cannot be used (a damaged record, another application's
file, a project another watcher owns) is a `StateError` naming the file or the
key, never a password.

Nothing here imports from the rest of the package but its errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import sqlite3
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, TypeVar, cast

import attrs

from ._closing import AsyncClosing
from .errors import StateError

try:
    import fcntl
except ImportError:  # Windows: no flock; a second watcher is not detected there
    fcntl = None  # type: ignore[assignment]

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
    scope: bytes = b""  # what the watch watched (endpoint, filters); opaque here


@attrs.frozen
class ProjectChanges:
    """
    One poll's changes to one project: jobs to write (*upsert*) and to forget
    (*delete*), and the poll's events (*pending*), which replace the previous
    ones with none of them taken yet. *scope* replaces what the project's
    state is of; with *replace*, every job record kept before goes first (a
    baseline: the state starts over).
    """

    project_id: str
    upsert: Mapping[str, bytes] = attrs.field(factory=dict)
    delete: Collection[str] = ()
    pending: Sequence[bytes] = ()
    scope: bytes = b""
    replace: bool = False


class Checkpoint(Protocol):
    """
    Durable state for `IefClient.watch_jobs`: implement these to keep it
    elsewhere. Records are opaque bytes; a store never looks inside them.
    """

    async def claim(self, project_ids: Sequence[str], *, ttl: float) -> None:
        """
        Become the one live owner of these projects' state, for *ttl* seconds
        renewed by every write and `renew`; `StateError` naming a project
        when another live watcher owns it.
        """

    async def renew(self) -> None:
        """Renew the ownership `claim` took; `StateError` when it was lost."""

    def location(self, project_id: str) -> str:
        """Where *project_id*'s state lives, for messages: never a password."""

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
        " pending BLOB NOT NULL, taken INTEGER NOT NULL,"
        " scope BLOB NOT NULL DEFAULT x'')"
    ),
    (
        "CREATE TABLE IF NOT EXISTS ief_jobs (project_id TEXT NOT NULL,"
        " job_id TEXT NOT NULL, record BLOB NOT NULL,"
        " PRIMARY KEY (project_id, job_id)) WITHOUT ROWID"
    ),
)


# PRAGMA application_id marks a file as ours ("IEJS"); user_version its layout
_APPLICATION_ID: Final = 0x49454A53
_LAYOUT: Final = 2
_TABLES: Final = frozenset({"ief_projects", "ief_jobs"})


def _pack_list(items: Sequence[bytes]) -> bytes:
    # length-prefixed: records are opaque and may hold any byte
    return b"".join(len(item).to_bytes(4, "big") + item for item in items)


def _unpack_list(blob: bytes) -> list[bytes]:
    """The items of a `_pack_list` blob; ValueError if it was cut or garbled."""
    if not isinstance(blob, bytes):
        msg = f"pending events are {type(blob).__name__}, not bytes"
        raise TypeError(msg)
    items, at = [], 0
    while at < len(blob):
        size = int.from_bytes(blob[at : at + 4], "big")
        if at + 4 + size > len(blob):
            msg = "the pending events are cut short"
            raise ValueError(msg)
        items.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return items


def _saved(
    where: str, jobs: Mapping[str, bytes], pending: object, taken: object, scope: object
) -> SavedProject:
    """A loaded project, its bookkeeping checked: StateError naming *where*."""
    try:
        events = _unpack_list(cast("bytes", pending))
        count = int(cast("str", taken))
    except (TypeError, ValueError) as exc:
        raise StateError(reason=f"{where} is damaged: {exc}") from None
    if not 0 <= count <= len(events):
        msg = f"{where} is damaged: {count} of {len(events)} pending events taken"
        raise StateError(reason=msg)
    if not isinstance(scope, bytes):
        raise StateError(reason=f"{where} is damaged: its scope is not bytes")
    return SavedProject(jobs, events, count, scope)


def _lock_holder(fd: int) -> str:
    """ " (pid N)" for the process holding a flock on *fd*'s file, where Linux tells."""
    inode = os.fstat(fd).st_ino
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and fields[-3].endswith(f":{inode}"):
                return f" (pid {fields[-4]})"
    return ""


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

    __slots__ = ("_closed", "_connection", "_executor", "_lock", "path")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ief-jobs-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._lock: int | None = None  # a descriptor holding the file's flock
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteCheckpoint({str(self.path)!r})"

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            msg = "this SqliteCheckpoint is closed"
            raise RuntimeError(msg)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connect()))

    def location(self, project_id: str) -> str:  # noqa: ARG002 (one file for all)
        """The state file, as messages name it."""
        return f"state file {self.path}"

    def _connect(self) -> sqlite3.Connection:
        # on the checkpoint's own thread: sqlite3 connections stay on theirs
        if self._connection is None:
            self._take_lock()
            try:
                connection = sqlite3.connect(
                    self.path, timeout=30, isolation_level=None
                )
                try:
                    self._prepare(connection)
                except BaseException:
                    connection.close()
                    raise
            except sqlite3.DatabaseError as exc:  # not a database at all
                self._drop_lock()
                msg = f"state file {self.path} cannot be used: {exc}"
                raise StateError(reason=msg) from None
            except BaseException:
                self._drop_lock()
                raise
            self._connection = connection
        return self._connection

    def _take_lock(self) -> None:
        """Lock the file for this checkpoint's life: one live watcher per file."""
        if fcntl is None:
            return
        # flock, not SQLite's own fcntl locks: the two never meet on Linux, and
        # opening does not change a byte of a file that turns out foreign
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            msg = f"state file {self.path} cannot be opened: {exc.strerror}"
            raise StateError(reason=msg) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            msg = f"state file {self.path} is in use by another watcher{holder}"
            raise StateError(reason=msg) from None
        self._lock = fd

    def _drop_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Refuse a file that is not ours, before writing to it; then set it up."""
        (app_id,) = db.execute("PRAGMA application_id").fetchone()
        (layout,) = db.execute("PRAGMA user_version").fetchone()
        names = {
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            )
        }
        where = f"state file {self.path}"
        if app_id not in {0, _APPLICATION_ID} or (app_id == 0 and names - _TABLES):
            what = f"application id {app_id}" if app_id else "other tables"
            msg = f"{where} is another application's database ({what}): not touched"
            raise StateError(reason=msg)
        if layout > _LAYOUT:
            msg = f"{where} was written by a newer ief-jobs (layout {layout})"
            raise StateError(reason=msg)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            db.execute(statement)
        columns = {row[1] for row in db.execute("PRAGMA table_info(ief_projects)")}
        if "scope" not in columns:  # a file of the first layout: keep its state
            db.execute(
                "ALTER TABLE ief_projects ADD COLUMN scope BLOB NOT NULL DEFAULT x''"
            )
        db.execute(f"PRAGMA application_id={_APPLICATION_ID}")
        db.execute(f"PRAGMA user_version={_LAYOUT}")

    async def claim(self, project_ids: Sequence[str], *, ttl: float) -> None:  # noqa: ARG002
        """Open and lock the file: `StateError` if another watcher has it."""
        await self._run(lambda _: None)

    async def renew(self) -> None:
        """Nothing to renew: the lock lasts until `aclose`."""

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
            self._drop_lock()

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close)
        finally:
            self._executor.shutdown(wait=False)

    async def load(self, project_id: str) -> SavedProject | None:
        """The project as last saved, or None."""

        def load(db: sqlite3.Connection) -> SavedProject | None:
            row = db.execute(
                "SELECT pending, taken, scope FROM ief_projects WHERE project_id = ?",
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
            where = f"state file {self.path}, project {project_id}"
            return _saved(where, jobs, row[0], row[1], row[2])

        return await self._run(load)

    async def save(self, changes: Sequence[ProjectChanges]) -> None:
        """Write one poll's changes, all projects in one transaction."""

        def save(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                for change in changes:
                    pid = change.project_id
                    db.execute(
                        "INSERT OR REPLACE INTO ief_projects VALUES (?, ?, 0, ?)",
                        (pid, _pack_list(change.pending), change.scope),
                    )
                    if change.replace:
                        db.execute("DELETE FROM ief_jobs WHERE project_id = ?", (pid,))
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
    a hash of job records, ``{prefix}:{project_id}:meta`` and
    ``{prefix}:{project_id}:owner``), so whichever process watches a project
    next, after a restart anywhere or a change in the number of shards,
    resumes it. The project id is a Redis Cluster hash tag: a project's keys
    share a slot and each poll's changes to it are one ``MULTI``/``EXEC``
    transaction. Durability is the server's (``appendonly yes`` keeps every
    write through a server restart).

    A watch claims each of its projects with an owner lease (the ``owner``
    key, with a time to live): a second watcher over any of them fails at
    start; every write checks and renews the lease in its transaction, so a
    watcher that lost it (paused past its time to live while another took
    over) cannot write, and stops. A watcher killed outright frees its
    projects when the lease runs out; one that stops cleanly frees them at once.

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

    __slots__ = (
        "_client",
        "_closed",
        "_owned",
        "_owns_client",
        "_token",
        "_ttl_ms",
        "prefix",
    )

    def __init__(
        self, client: redis.asyncio.Redis, *, prefix: str = "ief-jobs"
    ) -> None:
        self._client = client
        self._owns_client = False
        self._closed = False
        self.prefix = prefix
        # who holds a lease, as a second watcher's error shows it
        self._token = f"pid {os.getpid()} on {socket.gethostname()} {uuid.uuid4().hex}"
        self._owned: list[str] = []  # the projects claimed
        self._ttl_ms = 0

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

    @property
    def client(self) -> redis.asyncio.Redis:
        """The Redis client it writes with (a sink on it can join a save)."""
        return self._client

    def location(self, project_id: str) -> str:
        """The project's Redis key, as messages name it."""
        return f"Redis key {self._keys(project_id)[1]}"

    async def aclose(self) -> None:
        """Free the projects claimed; close the client if this checkpoint made it."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._release()
        finally:
            if self._owns_client:
                await self._client.aclose()

    def _keys(self, project_id: str) -> tuple[str, str]:
        base = f"{self.prefix}:{{{project_id}}}"
        return f"{base}:jobs", f"{base}:meta"

    def _owner(self, project_id: str) -> str:
        return f"{self.prefix}:{{{project_id}}}:owner"

    async def claim(self, project_ids: Sequence[str], *, ttl: float) -> None:
        """
        Take an owner lease of *ttl* seconds on each project, or none: a
        `StateError` names a project another watcher holds.
        """
        self._ttl_ms = max(1, round(ttl * 1000))
        for project_id in project_ids:
            key = self._owner(project_id)
            holder = await self._client.eval(_CLAIM, 1, key, self._token, self._ttl_ms)
            if holder == 1:
                if project_id not in self._owned:
                    self._owned.append(project_id)
                continue
            shown = f" ({_holder(holder)})"
            await self._release()
            msg = (
                f"project {project_id}: Redis key {key} is held by another "
                f"live watcher{shown}; it frees within {ttl:g} s of that one's end"
            )
            raise StateError(reason=msg, project_id=project_id)

    async def _release(self) -> None:
        """Free every lease this checkpoint holds (at a clean stop, or a refusal)."""
        owned, self._owned = self._owned, []
        if owned:
            async with self._client.pipeline(transaction=False) as pipe:
                for project_id in owned:
                    pipe.eval(_RELEASE, 1, self._owner(project_id), self._token)
                await pipe.execute()

    async def renew(self) -> None:
        """Extend every lease held; `StateError` if one was lost."""
        if not self._owned:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for project_id in self._owned:
                pipe.eval(_RENEW, 1, self._owner(project_id), self._token, self._ttl_ms)
            held = await pipe.execute()
        for project_id, ok in zip(self._owned, held, strict=True):
            if not ok:
                self._lost(project_id)

    def _lost(self, project_id: str) -> None:
        key = self._owner(project_id)
        msg = (
            f"project {project_id}: the lease at Redis key {key} was lost "
            "(this watcher paused longer than its time to live and another took "
            "over): stopping without writing"
        )
        raise StateError(reason=msg, project_id=project_id)

    async def _write(
        self, project_ids: Sequence[str], commands: Callable[[Any], object]
    ) -> None:
        """
        *commands* in one transaction, only while this watcher owns each of
        *project_ids* (a project never claimed: a store used on its own).
        """
        import redis.exceptions  # noqa: PLC0415 (an optional extra: only when used)

        owned = [pid for pid in project_ids if pid in self._owned]
        owners = [self._owner(pid) for pid in owned]
        async with self._client.pipeline(transaction=True) as pipe:
            try:
                if owners:
                    await pipe.watch(*owners)
                    for project_id, owner in zip(owned, owners, strict=True):
                        if await pipe.get(owner) != self._token.encode():
                            self._lost(project_id)
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py 5 leaves it bare
                commands(pipe)
                for owner in owners:
                    pipe.pexpire(owner, self._ttl_ms)
                await pipe.execute()
            except redis.exceptions.WatchError:
                self._lost(owned[0])

    async def load(self, project_id: str) -> SavedProject | None:
        """The project as last saved, or None."""
        jobs_key, meta_key = self._keys(project_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(meta_key)
            pipe.hgetall(jobs_key)
            meta, jobs = await pipe.execute()
        if not meta:
            return None
        where = f"Redis key {meta_key}"
        if b"pending" not in meta or b"taken" not in meta:
            raise StateError(reason=f"{where} is damaged: fields are missing")
        return _saved(
            where,
            {key.decode(): value for key, value in jobs.items()},
            meta[b"pending"],
            meta[b"taken"].decode(errors="replace"),
            meta.get(b"scope", b""),
        )

    async def save(
        self,
        changes: Sequence[ProjectChanges],
        *,
        also: Callable[[Any], object] | None = None,
    ) -> None:
        """
        Write one poll's changes, one transaction per project; with *also*
        (a sink's commands on the same server), all of it in one.
        """
        if also is None:
            for change in changes:
                await self._write(
                    [change.project_id], functools.partial(self._save_commands, change)
                )
            return

        def commands(pipe: Any) -> None:
            for change in changes:
                self._save_commands(change, pipe)
            also(pipe)

        await self._write([change.project_id for change in changes], commands)

    def _save_commands(self, change: ProjectChanges, pipe: Any) -> None:
        jobs_key, meta_key = self._keys(change.project_id)
        if change.replace:
            pipe.delete(jobs_key)
        pipe.hset(
            meta_key,
            mapping={
                "pending": _pack_list(change.pending),
                "taken": 0,
                "scope": change.scope,
            },
        )
        if change.upsert:
            # the client's Mapping is invariant in its key: str is fine
            records = cast("Mapping[EncodableT, EncodableT]", change.upsert)
            pipe.hset(jobs_key, mapping=records)
        if change.delete:
            pipe.hdel(jobs_key, *change.delete)

    async def mark_taken(self, project_id: str, taken: int) -> None:
        """Record that the first *taken* pending events were taken."""
        meta_key = self._keys(project_id)[1]
        await self._write(
            [project_id], lambda pipe: pipe.hset(meta_key, "taken", taken)
        )


# a lease is taken when free (or held already), renewed or freed only by the
# watcher that holds it; a claim refused answers the holder
_CLAIM: Final = (
    "local v = redis.call('GET', KEYS[1])"
    " if not v then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1"
    " elseif v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2])"
    " else return v end"
)
_RENEW: Final = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then"
    " return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
)
_RELEASE: Final = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then"
    " return redis.call('DEL', KEYS[1]) else return 0 end"
)


def _holder(token: bytes | str) -> str:
    # "pid N on HOST <random>": the random part tells leases apart, not people
    text = token.decode(errors="replace") if isinstance(token, bytes) else token
    return text.rsplit(" ", 1)[0]
