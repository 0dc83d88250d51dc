"""
``break`` and what happens to the requests behind the loop (issue 14, item 11).

Python closes an async generator at ``break`` only when nothing else refers to
it; a caller that keeps the iterator (a variable, an attribute) keeps its
requests going until the buffer fills. ``async with`` on what the ``iter_*``
methods return, or ``contextlib.aclosing``, stops them when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import ief_jobs
from ief_jobs import IefClient, TokenAuth
from ief_jobs.emulator import Emulator, Faults

Opener = Callable[[IefClient, list[str]], object]


@pytest.fixture(name="emulator")
async def _emulator() -> AsyncIterator[Emulator]:
    # answers take a few ms, so requests are in flight when the consumer stops
    faults = Faults(latency=0.003)
    async with Emulator(projects=4, jobs=400, faults=faults) as emulator:
        yield emulator


_LIBRARY = Path(ief_jobs.__file__).parent
_SERVER = _LIBRARY / "emulator"


def _others() -> set[str]:
    """The client's tasks still alive (the emulator's share the loop)."""
    alive = set()
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        where = Path(code.co_filename) if code is not None else _SERVER
        if where.is_relative_to(_LIBRARY) and not where.is_relative_to(_SERVER):
            alive.add(code.co_qualname)  # type: ignore[union-attr]
    return alive


async def _settle(emulator: Emulator) -> int:
    """Let anything still running send what it would; return the request count."""
    for _ in range(5):
        await asyncio.sleep(0.005)
    return emulator.stats.requests


_OPENERS: dict[str, Opener] = {
    "iter_jobs_many": lambda ief, ids: ief.iter_jobs_many(ids),
    "iter_jobs": lambda ief, ids: ief.iter_jobs(ids[0]),
    "iter_pages": lambda ief, ids: ief.iter_pages(ids[0]),
}


@pytest.mark.parametrize("method", list(_OPENERS))
async def test_async_with_stops_everything_at_break_despite_a_reference(
    emulator: Emulator, method: str
) -> None:
    """A reference kept past ``break`` inside ``async with``: once the block is
    left, no request is in flight, no task is alive and none is sent later."""
    async with IefClient(
        emulator.base_url, auth=TokenAuth(emulator.token), page_size=10, concurrency=4
    ) as ief:
        kept = _OPENERS[method](ief, emulator.project_ids)
        async with kept as stream:  # type: ignore[attr-defined]
            async for _ in stream:
                break
        assert 0 == ief.limiter.in_flight
        assert set() == _others()
        sent = emulator.stats.requests

        assert sent == await _settle(emulator)
        assert kept is not None  # still referred to, all along


async def test_aclosing_does_the_same(emulator: Emulator) -> None:
    async with IefClient(
        emulator.base_url, auth=TokenAuth(emulator.token), page_size=10, concurrency=4
    ) as ief:
        jobs = ief.iter_jobs_many(emulator.project_ids)
        async with contextlib.aclosing(jobs):
            async for _ in jobs:
                break
        assert set() == _others()
        sent = emulator.stats.requests

        assert sent == await _settle(emulator)


async def test_break_alone_leaves_a_kept_stream_running_until_closed(
    emulator: Emulator,
) -> None:
    """What the README warns about: without ``async with``, a kept iterator's
    work goes on after ``break``; its ``aclose()`` stops it."""
    async with IefClient(
        emulator.base_url, auth=TokenAuth(emulator.token), page_size=10, concurrency=4
    ) as ief:
        jobs = ief.iter_jobs_many(emulator.project_ids)
        async for _ in jobs:
            break
        at_break = emulator.stats.requests

        assert _others()  # the fan-out is still running
        assert await _settle(emulator) > at_break

        await jobs.aclose()
        assert set() == _others()
        assert 0 == ief.limiter.in_flight
