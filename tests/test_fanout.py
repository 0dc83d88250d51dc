from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from ief_jobs.fanout import merge_walks
from ief_jobs.models import JobPage


class TestMergeWalks:
    async def test_at_most_active_walks_run_at_once(self) -> None:
        """10,000 projects cost what runs at once: never more than *active* walks."""
        running = most = started = 0

        async def walk(project_id: str) -> AsyncGenerator[JobPage, None]:
            nonlocal running, most, started
            running += 1
            started += 1
            most = max(most, running)
            try:
                await asyncio.sleep(0)
                yield JobPage(project_id=project_id, offset=0, job_count=0, jobs=())
            finally:
                running -= 1

        ids = [f"p{index}" for index in range(10_000)]
        pages = merge_walks(ids, walk, buffer=8, active=8)
        seen = [page.project_id async for page in pages]

        assert 8 == most
        assert 10_000 == started
        assert sorted(ids) == sorted(seen)

    async def test_walks_start_in_the_order_given(self) -> None:
        """A project listed early is walked early, whatever comes after it."""
        order: list[str] = []

        async def walk(project_id: str) -> AsyncGenerator[JobPage, None]:
            order.append(project_id)
            yield JobPage(project_id=project_id, offset=0, job_count=0, jobs=())

        ids = [f"p{index}" for index in range(50)]
        async for _ in merge_walks(ids, walk, active=4):
            pass

        assert ids == order

    async def test_closing_early_leaves_no_task(self) -> None:
        """aclose() after a few pages cancels the walks and the starter with them."""

        async def walk(project_id: str) -> AsyncGenerator[JobPage, None]:
            for offset in range(1000):
                await asyncio.sleep(0)
                yield JobPage(
                    project_id=project_id, offset=offset, job_count=0, jobs=()
                )

        pages = merge_walks([f"p{i}" for i in range(1000)], walk, active=16)
        await anext(pages)
        await pages.aclose()

        assert [asyncio.current_task()] == list(asyncio.all_tasks())
