from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from aioresponses import aioresponses
from hypothesis import HealthCheck, settings

from _support import ENDPOINT, TOKEN, no_sleep
from ief_jobs import IefClient, RetryPolicy, TokenAuth

settings.register_profile(
    "fast",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture(name="mocked")
def _mocked() -> Iterator[aioresponses]:
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture(name="client")
async def _client() -> AsyncIterator[IefClient]:
    retry = RetryPolicy(attempts=3, sleep=no_sleep, jitter=lambda: 0.0)
    async with IefClient(ENDPOINT, auth=TokenAuth(TOKEN), retry=retry) as client:
        yield client
