"""
Where a watch's events go when each must arrive once: `Sink`, and Redis Streams.

A watch given a sink (``watch_jobs(..., sink=...)``, ``ief-jobs watch --sink``)
hands it each poll's job events before it yields them:

* With a `RedisCheckpoint` on the same Redis server, the events and the poll's
  state go in one ``MULTI``/``EXEC`` transaction: a crash leaves both as they
  were before the poll or both as after it, so the stream holds each change
  once.
* With any other checkpoint (or none) the watch saves its state, then writes
  the events, then marks them taken; after a crash in between it writes them
  again, and the sink drops an ``event_id`` it already holds (it remembers
  the latest *window* of them), so the stream still holds each change once.

``project_failed`` is not a change of a job: it is yielded, not written.

Needs the ``redis`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from ._closing import AsyncClosing
from .checkpoint import Checkpoint, ProjectChanges, RedisCheckpoint
from .forms import job_fields
from .watch import JobEvent

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisStreamSink", "event_json"]

DEFAULT_WINDOW: Final = 100_000  # event ids remembered: days of a busy account


def event_json(event: JobEvent) -> bytes:
    """One event as a JSON object: a line of ``watch --format jsonl``."""
    job = event.job
    return orjson.dumps(
        {
            "event_id": event.event_id,
            "kind": event.kind.value,
            "project_id": event.project_id,
            "observed_at": event.observed_at.isoformat(),
            "old_status": None if event.old_status is None else str(event.old_status),
            "new_status": None if event.new_status is None else str(event.new_status),
            "job": None if job is None else job_fields(event.project_id, job),
            "error": None if event.error is None else str(event.error),
        }
    )


# Append each event whose id the window does not hold; forget the oldest ids
# beyond the window. KEYS: stream, id set, id list; ARGV: window, then pairs
# of event id and JSON.
_APPEND: Final = """
local added = 0
for i = 2, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'event_id', ARGV[i], 'event', ARGV[i + 1])
    redis.call('RPUSH', KEYS[3], ARGV[i])
    added = added + 1
  end
end
local window = tonumber(ARGV[1])
while redis.call('LLEN', KEYS[3]) > window do
  redis.call('SREM', KEYS[2], redis.call('LPOP', KEYS[3]))
end
return added
"""


class RedisStreamSink(AsyncClosing):
    """
    Append a watch's events to a Redis Stream, each change once.

    Each entry has two fields: ``event_id`` and ``event`` (the JSON object of
    ``watch --format jsonl``). The sink remembers the latest *window* event
    ids (``{stream}:ids``, a set and a list) and drops one it holds. Give the
    watch a `RedisCheckpoint` on the same server and each poll's events and
    state are one transaction.

    Example::

        async with (
            RedisCheckpoint.from_url("redis://state:6379/0") as state,
            RedisStreamSink.from_url("redis://state:6379/0", stream="jobs") as sink,
            ief.watch_jobs(ids, checkpoint=state, sink=sink) as events,
        ):
            async for event in events:
                pass  # already in the stream

    Args:
        client: A ``redis.asyncio.Redis``; the sink does not close it (use
            `from_url` for one it owns).
        stream: The stream's key.
        window: How many event ids it remembers to drop repeats.
    """

    __slots__ = ("_client", "_closed", "_owns_client", "stream", "window")

    def __init__(
        self, client: redis.asyncio.Redis, *, stream: str, window: int = DEFAULT_WINDOW
    ) -> None:
        if not isinstance(stream, str) or not stream:
            msg = f"stream must be a non-empty key, not {stream!r}"
            raise ValueError(msg)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            msg = f"window must be a whole number of at least 1, not {window!r}"
            raise ValueError(msg)
        self._client = client
        self._owns_client = False
        self._closed = False
        self.stream = stream
        self.window = window

    @classmethod
    def from_url(
        cls, url: str, *, stream: str, window: int = DEFAULT_WINDOW
    ) -> RedisStreamSink:
        """A sink that owns a client for *url* (``redis://host:port/db``)."""
        import redis.asyncio  # noqa: PLC0415 (an optional extra: only when used)

        sink = cls(redis.asyncio.Redis.from_url(url), stream=stream, window=window)
        sink._owns_client = True
        return sink

    def __repr__(self) -> str:
        return f"RedisStreamSink(stream={self.stream!r})"  # never the URL

    async def aclose(self) -> None:
        """Close the client if this sink made it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()

    def _args(self, events: Sequence[JobEvent]) -> list[Any]:
        keys = [self.stream, f"{self.stream}:ids", f"{self.stream}:ids:order"]
        argv: list[Any] = [self.window]
        for event in events:
            argv += [event.event_id, event_json(event)]
        return [_APPEND, len(keys), *keys, *argv]

    async def write(self, events: Sequence[JobEvent]) -> None:
        """Append *events* in order, but those whose id the window holds."""
        if events:
            await self._client.eval(*self._args(events))

    async def commit(
        self,
        events: Sequence[JobEvent],
        checkpoint: Checkpoint,
        changes: Sequence[ProjectChanges],
    ) -> bool:
        """
        With a `RedisCheckpoint` on this sink's server: append *events* and
        save *changes* in one transaction, True. Otherwise nothing, False.
        """
        if not (
            isinstance(checkpoint, RedisCheckpoint)
            and _server(checkpoint.client) == _server(self._client)
        ):
            return False
        args = self._args(events)
        await checkpoint.save(changes, also=lambda pipe: pipe.eval(*args))
        return True


def _server(client: redis.asyncio.Redis) -> tuple[object, ...]:
    kwargs: Mapping[str, object] = client.connection_pool.connection_kwargs
    return tuple(kwargs.get(k) for k in ("host", "port", "path", "db"))
