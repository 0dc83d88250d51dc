"""The client-wide budget of pages: a stalled consumer stalls the fetching."""

from __future__ import annotations

import asyncio
import contextlib

from ief_jobs import IefClient, TokenAuth
from ief_jobs.emulator import Emulator


async def _settled(emulator: Emulator, ief: IefClient) -> int:
    """
    The requests served once fetching has stopped: none in flight and the
    count unchanged over ten polls a few milliseconds apart.
    """
    sent, still = -1, 0
    while still < 10:
        await asyncio.sleep(0.005)
        now = emulator.stats.requests
        still = still + 1 if now == sent and ief.limiter.in_flight == 0 else 0
        sent = now
    return sent


class TestPageBudget:
    async def test_a_stalled_consumer_stalls_every_walk(self) -> None:
        """40 projects x 3,000 jobs, the consumer stuck on its first record: the
        emulator serves at most 2 x concurrency + projects requests (one window
        per walk would be 512), and the listing then completes."""
        async with Emulator(projects=40, jobs=3000) as emulator:
            ids = emulator.project_ids
            async with IefClient(
                emulator.base_url, auth=TokenAuth(emulator.token)
            ) as ief:
                jobs = ief.iter_jobs_many(ids)
                async with contextlib.aclosing(jobs):
                    await anext(jobs)
                    sent = await _settled(emulator, ief)
                    rest = sum([1 async for _ in jobs])

        assert sent <= 2 * ief.concurrency + len(ids), sent
        assert 40 * 3000 == 1 + rest
