"""
What the client retries, how long it waits, and how many requests it keeps in flight.

* `RetryPolicy`: which failures are worth another attempt (429, 502, 503, 504,
  a failed or broken connection, a timeout, a body cut short), capped exponential
  backoff with jitter, ``Retry-After`` honoured, a bound on attempts and on time.
  Built on *tenacity*; sleep, clock and jitter are parameters so tests never sleep.
* `AdaptiveLimiter`: the client-wide bound on requests in flight, which halves on
  a 429 and grows back by one per window of successes (AIMD), so a fan-out over
  many projects settles under the gateway's limit instead of hammering it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import tenacity

from ._checks import check_callable, check_int, check_seconds, validator
from .errors import ServerError, ThrottledError, TransportError

__all__ = ["NO_RETRIES", "AdaptiveLimiter", "RetryPolicy"]

_TEMPORARY_STATUSES: Final = frozenset({502, 503, 504})
_log: Final = logging.getLogger("ief_jobs")


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, TransportError):
        return exc.retryable
    if isinstance(exc, ThrottledError):
        return True
    return isinstance(exc, ServerError) and exc.status in _TEMPORARY_STATUSES


_SECONDS: Final = validator(check_seconds)
_CALLABLE: Final = validator(check_callable)


@attrs.frozen
class RetryPolicy:
    """
    How one page's request is retried.

    A page is retried on 429, 502, 503 and 504, on connection errors and
    timeouts, and when its body was cut short; never on another 4xx, a 500, or a
    body that arrived whole but is not the documented JSON. The wait before
    attempt *n + 1* is ``min(wait_max, wait_initial * 2 ** (n - 1)) + jitter``,
    or the server's ``Retry-After`` (seconds or an HTTP date, capped at
    *retry_after_max*) when it sent one, on a 429 or a 5xx alike. *timeout*
    counts from the page's first attempt, so a page gives up at most
    *timeout* seconds plus one request's timeout after it started.

    Args:
        attempts: Most attempts per page, the first included (1: no retries).
        timeout: Most seconds from a page's first attempt to the start of its
            last one (None: no bound).
        wait_initial: The first backoff, in seconds.
        wait_max: The longest backoff before jitter.
        wait_jitter: Up to this many seconds added at random.
        retry_after_max: The longest ``Retry-After`` honoured.
        sleep: How to wait (tests pass a fake).
        clock: Monotonic seconds, for *timeout* (tests pass a fake).
        jitter: A random float in [0, 1) (tests pass a constant).

    Each argument is checked here: a wrong type is a `TypeError`, a negative,
    infinite or NaN number of seconds or fewer than one attempt a `ValueError`,
    each naming the argument.

    Example::

        IefClient(endpoint, auth=auth, retry=RetryPolicy(attempts=8, timeout=120))
    """

    attempts: int = attrs.field(default=5, validator=validator(check_int, minimum=1))
    timeout: float | None = attrs.field(
        default=60.0, validator=validator(check_seconds, optional=True)
    )
    wait_initial: float = attrs.field(default=0.5, validator=_SECONDS)
    wait_max: float = attrs.field(default=10.0, validator=_SECONDS)
    wait_jitter: float = attrs.field(default=1.0, validator=_SECONDS)
    retry_after_max: float = attrs.field(default=60.0, validator=_SECONDS)
    sleep: Callable[[float], Awaitable[None]] = attrs.field(
        default=asyncio.sleep, repr=False, validator=_CALLABLE
    )
    clock: Callable[[], float] = attrs.field(
        default=time.monotonic, repr=False, validator=_CALLABLE
    )
    jitter: Callable[[], float] = attrs.field(
        default=random.random, repr=False, validator=_CALLABLE
    )

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether *exc* is a failure worth another attempt."""
        return _is_retryable(exc)

    def backoff(self, attempt: int, exc: BaseException | None) -> float:
        """
        Seconds to wait after failed attempt number *attempt* (1-based).

        The server's ``Retry-After`` wins where it sent one: on a 429 or on a
        5xx (RFC 9110 gives it to 503 as much as to 429, and gateways send it
        on 502 and 504 too).
        """
        if (
            isinstance(exc, ThrottledError | ServerError)
            and exc.retry_after is not None
        ):
            return min(exc.retry_after, self.retry_after_max)
        try:
            base = min(self.wait_max, self.wait_initial * 2.0 ** (attempt - 1))
        except OverflowError:
            base = self.wait_max
        return base + self.jitter() * self.wait_jitter

    def retrying(self, *, started: float | None = None) -> tenacity.AsyncRetrying:
        """
        A fresh tenacity loop for one page: ``async for attempt in ...``.

        *started* is the *clock* time of the page's first attempt (now, if not
        given): *timeout* counts from there, not from the first failure.
        """
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.attempts)
        if self.timeout is not None:
            start = self.clock() if started is None else started
            stop = stop | _StopAfter(self.timeout, self.clock, start)
        return tenacity.AsyncRetrying(
            stop=stop,
            wait=self._wait,
            retry=tenacity.retry_if_exception(self.is_retryable),
            sleep=self.sleep,
            before_sleep=_log_retry,
            reraise=True,
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return self.backoff(state.attempt_number, exc)


NO_RETRIES: Final = RetryPolicy(attempts=1)
"""One attempt per page, never a retry: ``IefClient(..., retry=NO_RETRIES)``."""


def _log_retry(state: tenacity.RetryCallState) -> None:
    # our errors' text names project, offset and cause, never a credential
    exc = state.outcome.exception() if state.outcome is not None else None
    _log.info(
        "retrying in %.2f s after attempt %d: %s",
        state.upcoming_sleep,
        state.attempt_number,
        exc,
        extra={"project": getattr(exc, "project_id", None)},  # for JSON lines
    )


class _StopAfter(tenacity.stop.stop_base):
    """Stop once the next attempt would start *timeout* seconds after the first."""

    def __init__(
        self, timeout: float, clock: Callable[[], float], start: float
    ) -> None:
        self._timeout = timeout
        self._clock = clock
        self._start = start  # the first attempt's; tenacity's own clock is not ours

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        now = self._clock()
        upcoming = retry_state.upcoming_sleep or 0.0
        return now - self._start + upcoming > self._timeout


class AdaptiveLimiter:
    """
    A semaphore whose size adapts: halved on a 429, grown back on success.

    *maximum* is the configured bound; the size never drops below *minimum*. A
    burst of 429s answering requests sent before the last decrease counts once:
    only requests started after a decrease can decrease it again.
    """

    __slots__ = (
        "__weakref__",  # telemetry's gauges read a live limiter, never keep it
        "_decreased_at",
        "_in_flight",
        "_limit",
        "_maximum",
        "_minimum",
        "_started",
        "_waiters",
        "max_in_flight",
    )

    def __init__(self, maximum: int, *, minimum: int = 1) -> None:
        check_int("concurrency", maximum, minimum=1)
        self._maximum = maximum
        self._minimum = min(minimum, maximum)
        self._limit = float(maximum)
        self._in_flight = 0
        self._started = 0
        self._decreased_at = -1
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.max_in_flight = 0

    @property
    def limit(self) -> int:
        """How many requests may be in flight now."""
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        """How many are."""
        return self._in_flight

    async def acquire(self) -> int:
        """Wait for a slot; returns a ticket to pass to `throttled`."""
        if self._in_flight < self.limit and not self._waiters:
            return self._take()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # the slot was handed over just as we were cancelled: give it back
                self._in_flight -= 1
                self._wake()
            raise
        self._started += 1
        return self._started

    def release(self) -> None:
        """Give a slot back."""
        self._in_flight -= 1
        self._wake()

    def succeeded(self) -> None:
        """A request got an answer: grow by one slot per window of successes."""
        if self._limit < self._maximum:
            self._limit = min(self._maximum, self._limit + 1.0 / self._limit)
            self._wake()

    def throttled(self, ticket: int) -> None:
        """A request was throttled: halve, once per window of requests."""
        if ticket <= self._decreased_at:
            return
        self._limit = max(float(self._minimum), self._limit / 2)
        self._decreased_at = self._started

    def _take(self) -> int:
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        self._started += 1
        return self._started

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self.limit:
            future = self._waiters.popleft()
            if not future.done():
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
                future.set_result(None)
