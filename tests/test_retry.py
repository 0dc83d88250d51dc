"""Retries, waits and the rate limit, with a fake clock: nothing really sleeps."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from email.utils import formatdate

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from _support import ENDPOINT, PROJECT, TOKEN, list_url, page_body, wire_jobs
from ief_jobs import (
    DecodeError,
    IefClient,
    IefError,
    NotFoundError,
    RetryPolicy,
    ServerError,
    ThrottledError,
    TokenAuth,
    TransportError,
)


class FakeClock:
    """A monotonic clock that moves only when the policy sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _policy(clock: FakeClock, **kwargs: object) -> RetryPolicy:
    return RetryPolicy(
        sleep=clock.sleep,
        clock=clock,
        jitter=lambda: 0.5,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


@contextlib.asynccontextmanager
async def _listing(retry: RetryPolicy, **kwargs: object) -> AsyncIterator[IefClient]:
    async with IefClient(
        ENDPOINT,
        auth=TokenAuth(TOKEN),
        retry=retry,
        **kwargs,  # type: ignore[arg-type]
    ) as client:
        yield client


class TestWaits:
    async def test_backoff_is_exponential_capped_and_jittered(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """0.5, 1, 2, 4, 4 (capped) seconds, each plus half the jitter span."""
        url = list_url(limit=101, offset=0)
        mocked.get(url, status=503, repeat=True)
        retry = _policy(clock, attempts=6, wait_max=4.0, wait_jitter=1.0)

        async with _listing(retry) as ief:
            with pytest.raises(ServerError) as info:
                await ief.list_jobs(PROJECT)

        assert [1.0, 1.5, 2.5, 4.5, 4.5] == clock.sleeps
        assert 6 == info.value.attempts

    async def test_retry_after_seconds_is_honoured(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """A 429's Retry-After replaces the backoff; then the page comes."""
        url = list_url(limit=101, offset=0)
        mocked.get(url, status=429, headers={"Retry-After": "7"})
        mocked.get(url, status=429, headers={"Retry-After": "3"})
        mocked.get(url, body=page_body(1, wire_jobs(1)))

        async with _listing(_policy(clock)) as ief:
            jobs = await ief.list_jobs(PROJECT)

        assert 1 == len(jobs)
        assert [7.0, 3.0] == clock.sleeps

    async def test_retry_after_http_date_is_honoured(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """Retry-After as an HTTP date waits until then (to the second)."""
        url = list_url(limit=101, offset=0)
        later = formatdate(time.time() + 30, usegmt=True)
        mocked.get(url, status=429, headers={"Retry-After": later})
        mocked.get(url, body=page_body(0, []))

        async with _listing(_policy(clock)) as ief:
            await ief.list_jobs(PROJECT)

        [waited] = clock.sleeps
        assert 28.0 <= waited <= 30.0

    async def test_retry_after_is_capped(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """A Retry-After longer than retry_after_max waits retry_after_max."""
        url = list_url(limit=101, offset=0)
        mocked.get(url, status=429, headers={"Retry-After": "3000"})
        mocked.get(url, body=page_body(0, []))

        async with _listing(_policy(clock, retry_after_max=20.0)) as ief:
            await ief.list_jobs(PROJECT)

        assert [20.0] == clock.sleeps

    async def test_timeout_bounds_the_retries(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """No attempt starts more than *timeout* seconds after the first one."""
        url = list_url(limit=101, offset=0)
        mocked.get(url, status=429, headers={"Retry-After": "10"}, repeat=True)

        async with _listing(_policy(clock, attempts=100, timeout=35.0)) as ief:
            with pytest.raises(ThrottledError) as info:
                await ief.list_jobs(PROJECT)

        assert [10.0, 10.0, 10.0] == clock.sleeps
        assert 4 == info.value.attempts


class TestWhatIsRetried:
    @pytest.mark.parametrize("status", [429, 502, 503, 504])
    async def test_temporary_statuses_are_retried(
        self, mocked: aioresponses, clock: FakeClock, status: int
    ) -> None:
        url = list_url(limit=101, offset=0)
        mocked.get(url, status=status)
        mocked.get(url, body=page_body(2, wire_jobs(2)))

        async with _listing(_policy(clock)) as ief:
            jobs = await ief.list_jobs(PROJECT)

        assert 2 == len(jobs)
        assert 1 == len(clock.sleeps)

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 500])
    async def test_other_errors_are_not_retried(
        self, mocked: aioresponses, clock: FakeClock, status: int
    ) -> None:
        url = list_url(limit=101, offset=0)
        mocked.get(url, status=status, payload={"error_code": "X", "error_msg": "no"})

        async with _listing(_policy(clock)) as ief:
            with pytest.raises(IefError) as info:
                await ief.list_jobs(PROJECT)

        assert [] == clock.sleeps
        assert 1 == info.value.attempts
        if status == 404:
            assert isinstance(info.value, NotFoundError)

    @pytest.mark.parametrize(
        "failure",
        [
            aiohttp.ClientConnectionError("refused"),
            aiohttp.ServerDisconnectedError(),
            TimeoutError(),
            aiohttp.ClientPayloadError("cut short"),
        ],
    )
    async def test_connection_failures_are_retried(
        self, mocked: aioresponses, clock: FakeClock, failure: Exception
    ) -> None:
        url = list_url(limit=101, offset=0)
        mocked.get(url, exception=failure)
        mocked.get(url, body=page_body(1, wire_jobs(1)))

        async with _listing(_policy(clock)) as ief:
            jobs = await ief.list_jobs(PROJECT)

        assert 1 == len(jobs)
        assert 1 == len(clock.sleeps)

    async def test_a_whole_body_that_is_not_json_is_not_retried(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """A body that arrived whole but is wrong will be wrong again."""
        url = list_url(limit=101, offset=0)
        mocked.get(url, body=b"<html>maintenance</html>", repeat=True)

        async with _listing(_policy(clock)) as ief:
            with pytest.raises(DecodeError, match="not JSON"):
                await ief.list_jobs(PROJECT)

        assert [] == clock.sleeps

    async def test_a_bad_body_after_a_retry_counts_both_attempts(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """A walk decodes a page when it reaches it, after the retries: its
        DecodeError still says how many requests the page took."""
        url = list_url(limit=101, offset=0)
        mocked.get(url, status=503)
        mocked.get(url, body=b"<html>maintenance</html>")

        async with _listing(_policy(clock)) as ief:
            with pytest.raises(DecodeError, match="after 2 attempts") as info:
                await ief.list_jobs(PROJECT)

        assert 2 == info.value.attempts
        assert 1 == len(clock.sleeps)


class TestRateLimit:
    async def test_requests_are_spaced_by_the_rate_limit(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """rate_limit=500: 20 requests take at least 19 gaps of 2 ms (a lower
        bound, so a slow machine cannot fail it)."""
        records = wire_jobs(20)

        def page(url: URL, **_: object) -> CallbackResult:
            offset, limit = int(url.query["offset"]), int(url.query["limit"])
            return CallbackResult(body=page_body(20, records[offset : offset + limit]))

        # later pages ask from one record early: answer whatever is asked
        pattern = re.compile(re.escape(str(list_url())) + r"\?.*")
        mocked.get(pattern, callback=page, repeat=True)

        async with _listing(_policy(clock), rate_limit=500, concurrency=8) as ief:
            started = time.monotonic()
            jobs = [job async for job in ief.iter_jobs(PROJECT, page_size=1)]
            elapsed = time.monotonic() - started

        assert 20 == len(jobs)
        assert elapsed >= 19 * 0.002 * 0.9

    def test_rate_limit_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="rate_limit"):
            IefClient(ENDPOINT, auth=TokenAuth(TOKEN), rate_limit=0)


class TestRetryAfterOnServerErrors:
    @pytest.mark.parametrize("status", [502, 503, 504])
    async def test_seconds_are_honoured(
        self, mocked: aioresponses, clock: FakeClock, status: int
    ) -> None:
        """A 5xx's Retry-After replaces the backoff, as a 429's does (RFC 9110)."""
        url = list_url(limit=101, offset=0)
        mocked.get(url, status=status, headers={"Retry-After": "2"})
        mocked.get(url, body=page_body(1, wire_jobs(1)))

        async with _listing(_policy(clock)) as ief:
            jobs = await ief.list_jobs(PROJECT)

        assert 1 == len(jobs)
        assert [2.0] == clock.sleeps

    async def test_an_http_date_is_honoured(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """A 503's Retry-After as an HTTP date waits until then (to the second)."""
        url = list_url(limit=101, offset=0)
        later = formatdate(time.time() + 30, usegmt=True)
        mocked.get(url, status=503, headers={"Retry-After": later})
        mocked.get(url, body=page_body(0, []))

        async with _listing(_policy(clock)) as ief:
            await ief.list_jobs(PROJECT)

        [waited] = clock.sleeps
        assert 28.0 <= waited <= 30.0

    async def test_capped_and_kept_on_the_error(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """retry_after_max caps it; the last ServerError carries what was asked."""
        url = list_url(limit=101, offset=0)
        mocked.get(url, status=503, headers={"Retry-After": "300"}, repeat=True)
        retry = _policy(clock, attempts=3, retry_after_max=20.0)

        async with _listing(retry) as ief:
            with pytest.raises(ServerError) as info:
                await ief.list_jobs(PROJECT)

        assert [20.0, 20.0] == clock.sleeps
        assert 300.0 == info.value.retry_after


class TestTimeBound:
    async def test_counts_from_the_first_attempt(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """A request that takes 3 s to time out, under RetryPolicy(timeout=2):
        the next attempt would start past the bound, so none does."""
        url = list_url(limit=1, offset=0)

        def slow_timeout(*_: object, **__: object) -> None:
            clock.now += 3.0  # the request's own timeout ran out
            raise TimeoutError

        mocked.get(url, callback=slow_timeout, repeat=True)

        async with _listing(_policy(clock, timeout=2.0)) as ief:
            with pytest.raises(TransportError, match="timed out") as info:
                await ief.count_jobs(PROJECT)

        assert 1 == info.value.attempts
        assert [] == clock.sleeps

    async def test_the_last_attempt_starts_within_the_bound(
        self, mocked: aioresponses, clock: FakeClock
    ) -> None:
        """Every attempt starts within *timeout* of the first one's start."""
        url = list_url(limit=1, offset=0)
        starts: list[float] = []

        def slow_failure(*_: object, **__: object) -> None:
            starts.append(clock.now)
            clock.now += 4.0
            raise TimeoutError

        mocked.get(url, callback=slow_failure, repeat=True)

        async with _listing(_policy(clock, attempts=50, timeout=22.0)) as ief:
            with pytest.raises(TransportError) as info:
                await ief.count_jobs(PROJECT)

        assert len(starts) == info.value.attempts
        assert max(starts) - starts[0] <= 22.0
        # 4 s per request, then backoffs of 1.0, 1.5 and 2.5 s: attempts start
        # at 0, 5, 10.5 and 17 s; a fifth would start at 25.5 s (counted from
        # the first failure instead, 21.5 s, it would have been let through)
        assert [0.0, 5.0, 10.5, 17.0] == [s - starts[0] for s in starts]


class TestPolicyArguments:
    @pytest.mark.parametrize(
        ("kwargs", "error", "name"),
        [
            ({"attempts": 0}, ValueError, "attempts"),
            ({"attempts": 2.5}, TypeError, "attempts"),
            ({"attempts": True}, TypeError, "attempts"),
            ({"timeout": -1}, ValueError, "timeout"),
            ({"timeout": float("nan")}, ValueError, "timeout"),
            ({"timeout": "60"}, TypeError, "timeout"),
            ({"wait_initial": float("inf")}, ValueError, "wait_initial"),
            ({"wait_max": -0.1}, ValueError, "wait_max"),
            ({"wait_jitter": None}, TypeError, "wait_jitter"),
            ({"retry_after_max": float("inf")}, ValueError, "retry_after_max"),
            ({"sleep": 5}, TypeError, "sleep"),
            ({"clock": None}, TypeError, "clock"),
            ({"jitter": 0.5}, TypeError, "jitter"),
        ],
    )
    def test_a_bad_argument_is_named(
        self, kwargs: dict[str, object], error: type[Exception], name: str
    ) -> None:
        """Each argument is checked when the policy is built, and named."""
        with pytest.raises(error, match=name):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]

    def test_no_time_bound_is_allowed(self) -> None:
        assert RetryPolicy(timeout=None).timeout is None
