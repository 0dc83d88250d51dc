"""
Many projects' walks at once, merged into one stream of pages as they arrive.

At most *active* projects are walked at once, each in its own task inside one
`asyncio.TaskGroup`, and the next project starts when one ends: a fan-out over
10,000 projects costs what can be in flight, not what is listed. The group is owned
by a runner task rather than by the consumer: an async generator must not yield
from inside a task group (a failing child would cancel whatever the consumer
awaits next). Pages meet in one bounded queue, so a consumer that stops reading
stops the walks once it is full; closing the stream cancels the runner, and with
it every request in flight, before `aclose` returns.

No HTTP here: the walks are given as a function of the project id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence

import attrs

from .models import JobPage

__all__ = ["merge_walks"]


@attrs.frozen
class _Finished:
    project_id: str
    error: Exception | None = None


_Queue = asyncio.Queue[JobPage | _Finished]
Walk = Callable[[str], AsyncGenerator[JobPage, None]]
"""``walk(project_id)``: one project's pages in order (`listing.walk_pages`)."""


async def merge_walks(
    project_ids: Sequence[str],
    walk: Walk,
    *,
    collect_errors: bool = False,
    buffer: int = 32,
    active: int = 32,
) -> AsyncGenerator[JobPage, None]:
    """
    Run ``walk(project_id)`` for every project; yield pages as they arrive.

    Up to *active* walks run at once, started in the order given (so a project
    listed early finishes early, whatever comes after it). Each project's pages
    keep their order. The first failure is raised at once
    (the other walks are cancelled) unless *collect_errors*, in which case the
    others finish and all failures are raised at the end as one `ExceptionGroup`.
    """
    queue: _Queue = asyncio.Queue(max(buffer, 1))
    runner = asyncio.create_task(
        _run_all(project_ids, walk, queue, active), name="ief-jobs fan-out"
    )
    failures: list[Exception] = []
    try:
        remaining = len(project_ids)
        while remaining:
            item = await queue.get()
            if isinstance(item, JobPage):
                yield item
                continue
            remaining -= 1
            if item.error is not None and not collect_errors:
                raise item.error
            if item.error is not None:
                failures.append(item.error)
        if failures:
            msg = f"{len(failures)} of {len(project_ids)} projects failed"
            raise ExceptionGroup(msg, failures)
    finally:
        runner.cancel()
        # wait(), not await: our own cancellation must not be mistaken for the runner's
        await asyncio.wait([runner])
        if not runner.cancelled() and (error := runner.exception()) is not None:
            raise error


async def _run_all(
    project_ids: Sequence[str],
    walk: Walk,
    queue: _Queue,
    active: int,
) -> None:
    """Walk every project, at most *active* at once, in the order given."""
    slots = asyncio.Semaphore(max(active, 1))
    async with asyncio.TaskGroup() as group:
        for project_id in project_ids:
            await slots.acquire()
            task = group.create_task(
                _run_one(project_id, walk, queue),
                name=f"ief-jobs walk {project_id}",
            )
            task.add_done_callback(lambda _: slots.release())


async def _run_one(
    project_id: str,
    walk: Walk,
    queue: _Queue,
) -> None:
    """Hand one project's pages to *queue*, then how the walk ended."""
    pages = walk(project_id)
    try:
        async for page in pages:
            await queue.put(page)
    except Exception as exc:  # noqa: BLE001 (handed to the consumer, who raises it)
        await queue.put(_Finished(project_id, exc))
    else:
        await queue.put(_Finished(project_id))
    finally:
        await pages.aclose()
