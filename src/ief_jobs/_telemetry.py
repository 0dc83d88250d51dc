"""
What the client and the watch tell about themselves, behind one small interface.

The transport, the client and the watch call the hooks here and know no
backend (stamina's instrumentation hooks, at small scale). The OpenTelemetry
backend (`ief_jobs._otel`) is imported only when the ``otel`` extra
(``opentelemetry-api``) is installed; without it `make_telemetry` answers None
and every hook site is one ``is None`` test: nothing of OpenTelemetry is
imported and no work is done per request, let alone per record.

What the hooks never see: request headers, credentials, or anything a server
said beyond its status code, the size of its body and its ``Retry-After``. An
error is named by its exception class, never by its message.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

if TYPE_CHECKING:
    from aiolimiter import AsyncLimiter
    from yarl import URL

    from .models import JobPage, ListQuery
    from .retry import AdaptiveLimiter

__all__ = [
    "NO_ATTEMPT",
    "NO_OBSERVER",
    "Attempt",
    "Call",
    "Telemetry",
    "WatchHealth",
    "WatchObserver",
    "make_telemetry",
    "traced",
    "traced_pages",
]

T = TypeVar("T")

# A poll round that has not succeeded for this many intervals makes the watch
# unhealthy: one slow or failed round is weather, three are an outage.
UNHEALTHY_AFTER_INTERVALS = 3
_log: Final = logging.getLogger("ief_jobs.watch")


class Attempt(Protocol):
    """One HTTP attempt, as the transport reports it."""

    def admitted(self) -> None:
        """A slot under the in-flight limit was granted."""

    def paced(self) -> None:
        """The rate limiter let the request go."""

    def answered(self, status: int, size: int, error: BaseException | None) -> None:
        """The server answered *status* with *size* bytes; *error* if it refused."""

    def failed(self, error: BaseException) -> None:
        """No answer: *error* (only its class is kept)."""

    def decoded(self, record: object) -> None:
        """
        The body was decoded into *record*: a `JobPage`, a `codec.UnbuiltPage`
        or one job.
        """


class _NoAttempt:
    """What the transport reports to when nobody listens: nothing happens."""

    __slots__ = ()

    def admitted(self) -> None:
        pass

    def paced(self) -> None:
        pass

    def answered(self, status: int, size: int, error: BaseException | None) -> None:
        pass

    def failed(self, error: BaseException) -> None:
        pass

    def decoded(self, record: object) -> None:
        pass


NO_ATTEMPT: Final[Attempt] = _NoAttempt()


class Request(Protocol):
    """One request's attempts (the first and its retries)."""

    def attempt(self) -> Attempt:
        """Start the next attempt."""


class Call(Protocol):
    """One public call (a listing, a count, a poll round): a span's worth."""

    def start(self) -> None:
        """Begin, under whatever span is current now."""

    def end(self, error: BaseException | None) -> None:
        """Finish; *error* is what ended it, if anything."""


class Telemetry(Protocol):
    """A client's traces and metrics (`ief_jobs._otel.OtelTelemetry`)."""

    def live(self) -> bool:
        """Whether anything listens now (else skip the hooks for a while)."""

    def call(
        self, name: str, project_id: str | None, query: ListQuery | None, **extra: int
    ) -> Call:
        """A span for one public call, not started yet."""

    def request(
        self, call: Call | None, url: URL, offset: int | None, limit: int | None
    ) -> Request:
        """The attempts of one request, under *call* (or the current call)."""

    def track(self, limiter: AdaptiveLimiter, pace: AsyncLimiter | None) -> None:
        """Report *limiter*'s limit and requests in flight while it lives."""

    def watch_observer(
        self, health: WatchHealth | None, query: ListQuery | None = None
    ) -> WatchObserver:
        """What a watch of *query* reports its poll rounds to."""


def make_telemetry(
    endpoint: URL, tracer_provider: object, meter_provider: object
) -> Telemetry | None:
    """
    The OpenTelemetry backend for a client of *endpoint*, or None without
    the ``otel`` extra. Providers of None mean the global ones.

    Raises:
        ImportError: A provider was given but OpenTelemetry is not installed.
        TypeError: A provider is not an OpenTelemetry provider.
    """
    try:
        from ._otel import OtelTelemetry  # noqa: PLC0415 (only with the extra)
    except ImportError:
        if tracer_provider is None and meter_provider is None:
            return None
        msg = (
            "tracer_provider and meter_provider need OpenTelemetry: "
            "pip install 'ief-jobs[otel]'"
        )
        raise ImportError(msg) from None
    return OtelTelemetry.build(endpoint, tracer_provider, meter_provider)


async def traced(call: Call | None, work: Awaitable[T]) -> T:
    """Await *work* inside *call*'s span (just await it when *call* is None)."""
    if call is None:
        return await work
    call.start()
    try:
        result = await work
    except BaseException as exc:
        call.end(exc)
        raise
    call.end(None)
    return result


async def traced_pages(
    call: Call, pages: AsyncGenerator[JobPage, None]
) -> AsyncGenerator[JobPage, None]:
    """
    *pages*, inside *call*'s span: it starts with the first page asked for and
    ends when the stream does. Pages, not records, pass through here.
    """
    call.start()
    error: BaseException | None = None
    try:
        async for page in pages:
            yield page
    except GeneratorExit:  # the consumer stopped early: not a failure
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        try:
            await pages.aclose()
        finally:
            call.end(error)


class WatchHealth:
    """
    Whether a watch is alive: a poll round succeeded within the last three
    *interval*\\ s. A round succeeds when at least one of its projects was
    polled (one project failing for good is a ``project_failed`` event and a
    metric, not a dead watch); a shard with no project succeeds every round.

    The ``/healthz`` endpoint of ``ief-jobs watch --metrics-port`` answers
    from one; pass your own to `IefClient.watch_jobs` to serve it yourself.

    Example::

        health = WatchHealth(interval=30)
        async for event in ief.watch_jobs(ids, interval=30, health=health): ...
        ok, reason = health.check()  # elsewhere, e.g. in a probe handler

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "__weakref__",  # telemetry's gauges read a live one, never keep it
        "_clock",
        "failing",
        "interval",
        "last_round",
        "last_success",
        "rounds",
        "started",
    )

    def __init__(
        self, interval: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            msg = f"interval must be a number of seconds, not {interval!r}"
            raise TypeError(msg)
        if not 0 < interval < float("inf"):
            msg = f"interval must be above 0 and finite, not {interval}"
            raise ValueError(msg)
        self.interval = float(interval)
        self._clock = clock
        self.started = clock()
        self.last_success: float | None = None
        self.last_round: float | None = None
        self.rounds = 0
        self.failing = 0

    def round_done(self, *, polled: int, failed: int) -> None:
        """A poll round ended: *polled* projects answered, *failed* did not."""
        now = self._clock()
        self.rounds += 1
        self.last_round = now
        self.failing = failed
        if polled or not failed:
            self.last_success = now

    def since_success(self) -> float:
        """Seconds since the last successful round (or since the start)."""
        since = self.started if self.last_success is None else self.last_success
        return max(0.0, self._clock() - since)

    def check(self) -> tuple[bool, str]:
        """``(healthy, one line saying why)``."""
        limit = UNHEALTHY_AFTER_INTERVALS * self.interval
        since = self.since_success()
        if self.last_success is None:
            if since <= limit:
                return True, f"starting: no poll round finished yet ({since:.1f} s)"
            return False, (
                f"no poll round has succeeded in {since:.1f} s "
                f"(limit {limit:g} s: 3 intervals)"
            )
        if since <= limit:
            return True, (
                f"ok: last successful poll round {since:.1f} s ago, "
                f"{self.failing} project(s) failing"
            )
        return False, (
            f"last successful poll round {since:.1f} s ago "
            f"(limit {limit:g} s: 3 intervals), {self.failing} project(s) failing"
        )


class WatchObserver:
    """
    What a watch reports: each poll round, its events, its checkpoint writes.
    This one keeps only the *health*; `ief_jobs._otel` adds spans and metrics.
    """

    __slots__ = ("health",)

    def __init__(self, health: WatchHealth | None) -> None:
        self.health = health

    @contextlib.contextmanager
    def poll_round(self, projects: int) -> Iterator[None]:  # noqa: ARG002 (for spans)
        """Around one round's polls (no ``yield`` of the watch inside)."""
        yield

    def round_done(
        self, *, polled: int, failures: dict[str, Exception], events: dict[str, int]
    ) -> None:
        """A round's outcome: projects polled, failures by project, events by kind."""
        for project_id, error in failures.items():
            # the class only: an error's message may quote what a server said;
            # INFO, as retries are: project_failed events tell the consumer
            _log.info(
                "poll of project %s failed: %s",
                project_id,
                type(error).__qualname__,
                extra={"project": project_id},
            )
        _log.info(
            "poll round: %d project(s) polled, %d failed, %d event(s)",
            polled,
            len(failures),
            sum(events.values()),
        )
        if self.health is not None:
            self.health.round_done(polled=polled, failed=len(failures))

    @contextlib.contextmanager
    def checkpoint_write(self) -> Iterator[None]:
        """Around one round's checkpoint write."""
        started = time.perf_counter()
        yield
        self.checkpoint_saved(time.perf_counter() - started)

    def checkpoint_saved(self, seconds: float) -> None:
        """A round's changes took *seconds* to write to the checkpoint."""

    def round_failed(self, error: BaseException) -> None:
        """The round's outcome could not be saved or written: the watch ends."""


NO_OBSERVER: Final = WatchObserver(None)
