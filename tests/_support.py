"""Constants and helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from yarl import URL

from ief_jobs.emulator import Emulator, generate_jobs

# A copy of ../shared/fixtures/list_batch_jobs_example.json: tests run without shared/.
FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE = FIXTURES / "list_batch_jobs_example.json"
ENDPOINT = "https://ief.cn-north-4.myhuaweicloud.com"
TOKEN = "s3cr3t-token-value"  # noqa: S105 (a fake, checked to never leak)
PROJECT = "0123456789abcdef0123456789abcdef"


async def no_sleep(_: float) -> None:
    """A RetryPolicy sleep that returns at once."""


def list_url(
    project_id: str = PROJECT, endpoint: str = ENDPOINT, **query: object
) -> URL:
    """The URL the client sends for one page, query sorted as it sends it."""
    return URL(f"{endpoint}/v2/{project_id}/productmgr/jobs").with_query(
        sorted((k, str(v)) for k, v in query.items())
    )


def page_body(total: int, jobs: list[dict[str, Any]]) -> bytes:
    """A list response body."""
    return orjson.dumps({"job_count": total, "jobs": jobs})


def wire_jobs(count: int, project_id: str = PROJECT) -> list[dict[str, Any]]:
    """*count* realistic wire records, newest first (the server's default order)."""
    return generate_jobs(project_id, count)[::-1]


@contextlib.contextmanager
def served_in_thread(emulator: Emulator) -> Iterator[Emulator]:
    """
    *emulator* serving on its own loop in a thread, for code that runs its own
    ``asyncio.run`` (the CLI) or another process (the examples).
    """
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(emulator.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(emulator.aclose())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    if not started.wait(10):
        msg = "the emulator did not start"
        raise RuntimeError(msg)
    try:
        yield emulator
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
