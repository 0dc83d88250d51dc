"""
The OpenTelemetry backend of `ief_jobs._telemetry`: spans and metrics.

Imported only when ``opentelemetry-api`` (the ``otel`` extra) is installed.
It uses the API alone: the SDK, its exporters and readers are the
application's choice, and with none configured every span and instrument is
OpenTelemetry's own no-op.

Spans (tracer ``ief_jobs``):

* one per public call, named after it (``iter_jobs``, ``iter_pages``,
  ``iter_jobs_many``, ``list_jobs``, ``count_jobs``, ``get_job``) and one per
  watch poll round (``watch.poll``), with ``ief_jobs.project_id``, the query
  (``ief_jobs.query.*``), ``ief_jobs.requests`` and ``ief_jobs.records``;
* under it, one ``GET`` span (kind CLIENT) per HTTP attempt, as the HTTP
  client conventions say: ``http.request.method``, ``server.address``,
  ``server.port``, ``url.full``, ``http.response.status_code``,
  ``http.request.resend_count`` on a retry, ``error.type`` (an exception
  class name, never a message), and ``ief_jobs.offset``/``ief_jobs.limit``.
  Waits are span events named ``ief_jobs.wait`` with ``ief_jobs.wait.reason``
  (``in_flight_limit``, ``rate_limit``, ``backoff``) and
  ``ief_jobs.wait.seconds``; a backoff the server set carries
  ``ief_jobs.retry_after``.

No header is added to a request: context is not propagated to the server,
since a header would change what AK/SK signs.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import weakref
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Final, cast

from aiolimiter import AsyncLimiter
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)
from yarl import URL

from ._telemetry import Call, WatchHealth, WatchObserver
from .codec import UnbuiltPage
from .errors import ServerError, ThrottledError
from .models import JobPage, ListQuery
from .retry import AdaptiveLimiter

__all__ = ["OtelTelemetry"]

_NAME: Final = "ief_jobs"
try:  # the global meter provider before the application sets one
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    _UNSET_METERS: tuple[type, ...] = (_ProxyMeterProvider, metrics.NoOpMeterProvider)
except ImportError:  # pragma: no cover (a later API moved it: count it as set)
    _UNSET_METERS = (metrics.NoOpMeterProvider,)
_UNSET_TRACERS: Final = (ProxyTracerProvider, NoOpTracerProvider)
# the HTTP client conventions' advised buckets for http.client.request.duration
_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
_ROUND_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_WRITE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")

# The call whose requests are being made now, for requests that are not given
# one: a watch's poll round sets it around its polls (tasks inherit it).
_current: ContextVar[_Call | None] = ContextVar("ief_jobs_call", default=None)


def _status_class(status: int) -> str:
    index = status // 100 - 1
    return _STATUS_CLASSES[index] if 0 <= index < len(_STATUS_CLASSES) else "other"


class _Instruments:
    """One meter's instruments, shared by every client that uses the meter."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.requests = meter.create_counter(
            "ief_jobs.client.requests",
            unit="{request}",
            description="HTTP attempts, by status class (none: no answer)",
        )
        self.duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.retries = meter.create_counter(
            "ief_jobs.client.retries",
            unit="{request}",
            description="Attempts that repeat a failed one",
        )
        self.throttled = meter.create_counter(
            "ief_jobs.client.throttled",
            unit="{response}",
            description="Answers 429 (throttled)",
        )
        self.records = meter.create_counter(
            "ief_jobs.client.records",
            unit="{record}",
            description="Records decoded",
        )
        self.bytes_read = meter.create_counter(
            "ief_jobs.client.received",
            unit="By",
            description="Response body bytes read",
        )
        self.limiters: weakref.WeakKeyDictionary[AdaptiveLimiter, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )
        meter.create_observable_gauge(
            "ief_jobs.client.in_flight_limit",
            callbacks=[self._limits],
            unit="{request}",
            description="The adaptive bound on requests in flight",
        )
        meter.create_observable_gauge(
            "ief_jobs.client.in_flight",
            callbacks=[self._in_flight],
            unit="{request}",
            description="Requests in flight",
        )
        # the watch
        self.events = meter.create_counter(
            "ief_jobs.watch.events", unit="{event}", description="Events, by kind"
        )
        self.round_duration = meter.create_histogram(
            "ief_jobs.watch.poll.duration",
            unit="s",
            description="Duration of one poll round over every project",
            explicit_bucket_boundaries_advisory=_ROUND_BUCKETS,
        )
        self.checkpoint_write = meter.create_histogram(
            "ief_jobs.watch.checkpoint.write.duration",
            unit="s",
            description="Duration of one round's checkpoint write",
            explicit_bucket_boundaries_advisory=_WRITE_BUCKETS,
        )
        self.watches: weakref.WeakSet[WatchHealth] = weakref.WeakSet()
        meter.create_observable_gauge(
            "ief_jobs.watch.projects_failing",
            callbacks=[self._failing],
            unit="{project}",
            description="Projects whose last poll failed",
        )
        meter.create_observable_gauge(
            "ief_jobs.watch.since_last_success",
            callbacks=[self._since_success],
            unit="s",
            description="Seconds since a poll round last succeeded",
        )

    def _limits(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(lim.limit, attrs) for lim, attrs in self.limiters.items()]

    def _in_flight(self, _: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(lim.in_flight, attrs) for lim, attrs in self.limiters.items()
        ]

    def _failing(self, _: CallbackOptions) -> Iterable[Observation]:
        watches = list(self.watches)
        return [Observation(sum(w.failing for w in watches))] if watches else []

    def _since_success(self, _: CallbackOptions) -> Iterable[Observation]:
        # the worst of the watches alive: one process usually runs one
        watches = list(self.watches)
        if not watches:
            return []
        return [Observation(max(w.since_success() for w in watches))]


# one set of instruments per meter provider: a second client must not register
# the same instruments again (the SDK warns and keeps the first)
_INSTRUMENTS: weakref.WeakKeyDictionary[object, _Instruments] = (
    weakref.WeakKeyDictionary()
)


def _instruments(provider: metrics.MeterProvider) -> _Instruments:
    found = _INSTRUMENTS.get(provider)
    if found is None:
        meter = metrics.get_meter(_NAME, _version(), meter_provider=provider)
        found = _INSTRUMENTS[provider] = _Instruments(meter)
    return found


@functools.cache  # reading package metadata takes milliseconds
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("ief-jobs")
    except PackageNotFoundError:  # pragma: no cover (a source tree not installed)
        return "0"


def _query_attributes(query: ListQuery) -> dict[str, Any]:
    found: dict[str, Any] = {"ief_jobs.query.page_size": query.page_size}
    if query.offset:
        found["ief_jobs.query.offset"] = query.offset
    if query.job_type is not None:
        found["ief_jobs.query.job_type"] = str(query.job_type)
    if query.sort is not None:
        found["ief_jobs.query.sort"] = str(query.sort)
    if query.max_items is not None:
        found["ief_jobs.query.max_items"] = query.max_items
    if query.instance_id is not None:
        found["ief_jobs.query.instance_id"] = query.instance_id
    return found


class _Call:
    """One public call's span and tallies."""

    __slots__ = (
        "_attributes",
        "_name",
        "_tracer",
        "context",
        "records",
        "requests",
        "span",
    )

    def __init__(
        self, tracer: trace.Tracer, name: str, attributes: dict[str, Any]
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = attributes
        self.span: trace.Span = trace.INVALID_SPAN
        self.context: otel_context.Context | None = None
        self.requests = 0
        self.records = 0

    def start(self) -> None:
        self.span = self._tracer.start_span(self._name, attributes=self._attributes)
        self.context = trace.set_span_in_context(self.span)

    def end(self, error: BaseException | None) -> None:
        span = self.span
        span.set_attribute("ief_jobs.requests", self.requests)
        span.set_attribute("ief_jobs.records", self.records)
        if error is not None:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class _Attempt:
    """One HTTP attempt: its span and its measurements."""

    __slots__ = (
        "_call",
        "_limiter_full",
        "_pace_full",
        "_request",
        "_sent",
        "_started",
        "span",
    )

    def __init__(
        self,
        request: _Request,
        call: _Call | None,
        span: trace.Span,
        *,
        limiter_full: bool,
        pace_full: bool,
    ) -> None:
        self._request = request
        self._call = call
        self.span = span
        self._started = self._sent = time.monotonic()
        self._limiter_full = limiter_full
        self._pace_full = pace_full

    def _wait(self, reason: str, since: float, now: float) -> None:
        self.span.add_event(
            "ief_jobs.wait",
            {"ief_jobs.wait.reason": reason, "ief_jobs.wait.seconds": now - since},
        )

    def admitted(self) -> None:
        now = time.monotonic()
        if self._limiter_full:  # it had to wait for a slot
            self._wait("in_flight_limit", self._started, now)
        self._sent = now

    def paced(self) -> None:
        now = time.monotonic()
        if self._pace_full:
            self._wait("rate_limit", self._sent, now)
        self._sent = now

    def _finish(self, attributes: dict[str, Any], error: BaseException | None) -> None:
        m = self._request.telemetry.instruments
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
            self.span.set_attribute("error.type", attributes["error.type"])
            self.span.set_status(Status(StatusCode.ERROR))
        now = time.monotonic()
        m.duration.record(now - self._sent, attributes)
        self._request.ended = now
        self.span.end()

    def answered(self, status: int, size: int, error: BaseException | None) -> None:
        telemetry = self._request.telemetry
        m = telemetry.instruments
        self.span.set_attribute("http.response.status_code", status)
        m.requests.add(1, {"ief_jobs.status_class": _status_class(status)})
        m.bytes_read.add(size)
        if isinstance(error, ThrottledError):
            m.throttled.add(1)
        if (
            isinstance(error, ThrottledError | ServerError)
            and error.retry_after is not None
        ):
            self.span.set_attribute("ief_jobs.retry_after", error.retry_after)
            self._request.retry_after = error.retry_after
        attributes = dict(telemetry.base)
        attributes["http.response.status_code"] = status
        self._finish(attributes, error)

    def failed(self, error: BaseException) -> None:
        telemetry = self._request.telemetry
        telemetry.instruments.requests.add(1, {"ief_jobs.status_class": "none"})
        self._finish(dict(telemetry.base), error)

    def decoded(self, record: object) -> None:
        if isinstance(record, JobPage):
            records = len(record.jobs)
        elif isinstance(record, UnbuiltPage):
            records = record.records
        else:
            records = 1
        self._request.telemetry.instruments.records.add(records)
        if self._call is not None:
            self._call.records += records


class _Request:
    """The attempts of one request: counts resends, measures backoffs."""

    __slots__ = (
        "_attributes",
        "_call",
        "_limiter",
        "_pace",
        "ended",
        "resends",
        "retry_after",
        "telemetry",
    )

    def __init__(
        self,
        telemetry: OtelTelemetry,
        call: _Call | None,
        attributes: dict[str, Any],
        limiter: AdaptiveLimiter | None,
        pace: Any,
    ) -> None:
        self.telemetry = telemetry
        self._call = call
        self._attributes = attributes
        self._limiter = limiter
        self._pace = pace
        self.resends = -1
        self.ended = 0.0
        self.retry_after: float | None = None

    def attempt(self) -> _Attempt:
        call = self._call
        self.resends += 1
        attributes = self._attributes
        if self.resends:
            attributes = {**attributes, "http.request.resend_count": self.resends}
            self.telemetry.instruments.retries.add(1)
        if call is not None:
            call.requests += 1
        span = self.telemetry.tracer.start_span(
            "GET",
            context=None if call is None else call.context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        limiter = self._limiter
        attempt = _Attempt(
            self,
            call,
            span,
            limiter_full=limiter is not None and limiter.in_flight >= limiter.limit,
            pace_full=self._pace is not None and not self._pace.has_capacity(),
        )
        if self.resends:
            backoff: dict[str, Any] = {
                "ief_jobs.wait.reason": "backoff",
                "ief_jobs.wait.seconds": max(0.0, attempt._started - self.ended),  # noqa: SLF001
            }
            if self.retry_after is not None:
                backoff["ief_jobs.retry_after"] = self.retry_after
            span.add_event("ief_jobs.wait", backoff)
        self.retry_after = None
        return attempt


class OtelTelemetry:
    """A client's tracer and instruments (`ief_jobs._telemetry.Telemetry`)."""

    __slots__ = (
        "_live",
        "_next_check",
        "base",
        "instruments",
        "limiter",
        "meter_provider",
        "pace",
        "tracer",
        "tracer_provider",
    )

    def __init__(
        self,
        tracer: trace.Tracer,
        instruments: _Instruments,
        base: dict[str, Any],
        providers: tuple[object, object],
    ) -> None:
        self.tracer = tracer
        # as given: None follows the global provider, wherever it is set
        self.tracer_provider, self.meter_provider = providers
        self._live = False
        self._next_check = -math.inf
        self.instruments = instruments
        self.base = base  # what every request's metrics carry: method, server
        self.limiter: AdaptiveLimiter | None = None
        self.pace: Any = None

    @classmethod
    def build(
        cls, endpoint: URL, tracer_provider: object, meter_provider: object
    ) -> OtelTelemetry:
        if tracer_provider is not None and not isinstance(
            tracer_provider, trace.TracerProvider
        ):
            msg = (
                "tracer_provider must be an OpenTelemetry TracerProvider or None, "
                f"not {tracer_provider!r}"
            )
            raise TypeError(msg)
        if meter_provider is not None and not isinstance(
            meter_provider, metrics.MeterProvider
        ):
            msg = (
                "meter_provider must be an OpenTelemetry MeterProvider or None, "
                f"not {meter_provider!r}"
            )
            raise TypeError(msg)
        tracer = trace.get_tracer(_NAME, _version(), tracer_provider=tracer_provider)
        instruments = _instruments(
            meter_provider
            if meter_provider is not None
            else metrics.get_meter_provider()
        )
        base = {
            "http.request.method": "GET",
            "server.address": endpoint.host or "",
            "server.port": endpoint.port or 0,
        }
        return cls(tracer, instruments, base, (tracer_provider, meter_provider))

    def live(self) -> bool:
        """
        Whether anything listens: a provider was given, or the application
        set a global one. Asked once per call or walk, so that with the API
        installed and no SDK configured a request meets no telemetry at all.
        A global provider cannot be unset: once seen, it is not asked again;
        until then, at most once a second (asking costs microseconds).
        """
        if self._live:
            return True
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + 1.0
        self._live = self._listening()
        return self._live

    def _listening(self) -> bool:
        tracers = self.tracer_provider or trace.get_tracer_provider()
        meters = self.meter_provider or metrics.get_meter_provider()
        return not (
            isinstance(tracers, _UNSET_TRACERS) and isinstance(meters, _UNSET_METERS)
        )

    def call(
        self, name: str, project_id: str | None, query: ListQuery | None, **extra: int
    ) -> _Call:
        attributes: dict[str, Any] = {} if query is None else _query_attributes(query)
        if project_id is not None:
            attributes["ief_jobs.project_id"] = project_id
        attributes.update((f"ief_jobs.{key}", value) for key, value in extra.items())
        return _Call(self.tracer, name, attributes)

    def request(
        self, call: Call | None, url: URL, offset: int | None, limit: int | None
    ) -> _Request:
        attributes = dict(self.base)
        attributes["url.full"] = str(url)
        if offset is not None:
            attributes["ief_jobs.offset"] = offset
        if limit is not None:
            attributes["ief_jobs.limit"] = limit
        return _Request(
            self,
            cast("_Call | None", call) if call is not None else _current.get(),
            attributes,
            self.limiter,
            self.pace,
        )

    def track(self, limiter: AdaptiveLimiter, pace: AsyncLimiter | None) -> None:
        self.limiter = limiter
        self.pace = pace
        self.instruments.limiters[limiter] = {
            "server.address": self.base["server.address"],
            "server.port": self.base["server.port"],
        }

    def watch_observer(
        self, health: WatchHealth | None, query: ListQuery | None = None
    ) -> WatchObserver:
        return _OtelWatchObserver(self, health, query)


class _OtelWatchObserver(WatchObserver):
    """A watch's rounds as spans, and its metrics."""

    __slots__ = ("_query", "_round", "_telemetry")

    def __init__(
        self,
        telemetry: OtelTelemetry,
        health: WatchHealth | None,
        query: ListQuery | None,
    ) -> None:
        # the gauges need a health to read, whether or not the caller gave one
        super().__init__(health if health is not None else WatchHealth(1.0))
        self._telemetry = telemetry
        self._query = query
        self._round: _Call | None = None
        assert self.health is not None  # noqa: S101 (just set)
        telemetry.instruments.watches.add(self.health)

    @contextlib.contextmanager
    def poll_round(self, projects: int) -> Iterator[None]:
        call = self._telemetry.call("watch.poll", None, self._query, projects=projects)
        call.start()
        self._round = call
        started = time.monotonic()
        # the polls' tasks are created inside: they inherit both
        token = _current.set(call)
        attached = otel_context.attach(call.context)  # type: ignore[arg-type]
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            otel_context.detach(attached)
            _current.reset(token)
            self._telemetry.instruments.round_duration.record(
                time.monotonic() - started
            )
            if error is not None:
                call.end(error)
                self._round = None

    def round_done(
        self, *, polled: int, failures: dict[str, Exception], events: dict[str, int]
    ) -> None:
        super().round_done(polled=polled, failures=failures, events=events)
        failed = len(failures)
        counter = self._telemetry.instruments.events
        for kind, count in events.items():
            counter.add(count, {"ief_jobs.event.kind": kind})
        call, self._round = self._round, None
        if call is not None:
            call.span.set_attribute("ief_jobs.projects_failed", failed)
            call.span.set_attribute("ief_jobs.events", sum(events.values()))
            call.end(None)

    def round_failed(self, error: BaseException) -> None:
        call, self._round = self._round, None
        if call is not None:
            call.end(error)

    def checkpoint_saved(self, seconds: float) -> None:
        self._telemetry.instruments.checkpoint_write.record(seconds)
