"""
Traces and metrics with the real OpenTelemetry SDK: its in-memory span
exporter and metric reader, a listing over the emulator with its faults.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from _support import TOKEN, no_sleep
from ief_jobs import (
    ApiError,
    DecodeError,
    IefClient,
    JobEventKind,
    NotFoundError,
    RetryPolicy,
    SqliteCheckpoint,
    TokenAuth,
    WatchHealth,
)
from ief_jobs._daemon import JsonFormatter
from ief_jobs.emulator import Emulator, Faults


class Otel:
    """An SDK tracer and meter provider whose output the test reads."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def client(self, emulator: Emulator, **kwargs: Any) -> IefClient:
        kwargs.setdefault("retry", RetryPolicy(attempts=10, sleep=no_sleep))
        return IefClient(
            emulator.base_url,
            auth=TokenAuth(emulator.token),
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **kwargs,
        )

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if name is None or s.name == name]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name -> [(attributes, value or histogram point)]."""
        data = self.reader.get_metrics_data()
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = [
                        (dict(p.attributes or {}), getattr(p, "value", p))
                        for p in metric.data.data_points
                    ]
        return found

    def total(self, name: str, **attributes: Any) -> float:
        points = self.metrics().get(name, [])
        return sum(
            value
            for found, value in points
            if all(found.get(k) == v for k, v in attributes.items())
        )


@contextlib.asynccontextmanager
async def _serve(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """Serve *handler* for every GET on a free loopback port; yield its URL."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


@pytest.fixture(name="otel")
def _otel() -> Iterator[Otel]:
    otel = Otel()
    yield otel
    otel.tracer_provider.shutdown()
    otel.meter_provider.shutdown()


def _attempts_by_offset(spans: list[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
    by_offset: dict[int, list[ReadableSpan]] = collections.defaultdict(list)
    for span in spans:
        assert span.attributes is not None
        by_offset[int(span.attributes["ief_jobs.offset"])].append(span)
    return by_offset


class TestTraces:
    async def test_a_faulty_listing_shows_its_attempts_and_resends(
        self, otel: Otel
    ) -> None:
        """A span per HTTP attempt under the iter_jobs span; a retried page's
        attempts count their resends, a 429's carries its Retry-After."""
        # one request at a time: the emulator's seeded dice then fall the same
        faults = Faults(throttled_rate=0.2, server_error_rate=0.2, retry_after="0")
        async with (
            Emulator(projects=1, jobs=300, faults=faults, seed=3) as emulator,
            otel.client(emulator, concurrency=1, page_size=20) as ief,
        ):
            project = emulator.project_ids[0]
            jobs = [job async for job in ief.iter_jobs(project, job_type=None)]
            stats = emulator.stats

        assert 300 == len(jobs)
        assert stats.statuses[429] > 0
        assert sum(n for s, n in stats.statuses.items() if s >= 500) > 0
        [call] = otel.spans("iter_jobs")
        attempts = otel.spans("GET")
        assert stats.requests == len(attempts)
        assert call.attributes is not None
        assert project == call.attributes["ief_jobs.project_id"]
        assert 20 == call.attributes["ief_jobs.query.page_size"]
        assert stats.requests == call.attributes["ief_jobs.requests"]
        assert call.attributes["ief_jobs.records"] >= 300
        assert call.context is not None
        for span in attempts:
            assert span.parent is not None
            assert call.context.span_id == span.parent.span_id
            assert SpanKind.CLIENT == span.kind
            attributes = span.attributes
            assert attributes is not None
            assert "GET" == attributes["http.request.method"]
            assert "127.0.0.1" == attributes["server.address"]
            assert emulator.base_url.endswith(f":{attributes['server.port']}")
            status = attributes["http.response.status_code"]
            if status == 429:
                assert "ThrottledError" == attributes["error.type"]
                assert 0.0 == attributes["ief_jobs.retry_after"]
            elif status >= 500:
                assert "ServerError" == attributes["error.type"]
                assert StatusCode.ERROR == span.status.status_code
            else:
                assert 200 == status
                assert "error.type" not in attributes
        for spans in _attempts_by_offset(attempts).values():
            spans.sort(key=lambda s: s.start_time or 0)
            resends = [s.attributes.get("http.request.resend_count") for s in spans]  # type: ignore[union-attr]
            assert [None, *range(1, len(spans))] == resends
            assert 200 == spans[-1].attributes["http.response.status_code"]  # type: ignore[index]
            for before, retry in itertools.pairwise(spans):
                [wait] = [e for e in retry.events if e.name == "ief_jobs.wait"]
                assert wait.attributes is not None
                assert "backoff" == wait.attributes["ief_jobs.wait.reason"]
                throttled = before.attributes["http.response.status_code"] == 429  # type: ignore[index]
                # the emulator sends Retry-After with its 429s only
                assert throttled == ("ief_jobs.retry_after" in wait.attributes)

    async def test_each_public_call_has_its_span(self, otel: Otel) -> None:
        """iter_pages, iter_jobs_many, list_jobs, count_jobs and get_job each
        make one span, parent of their own attempts only."""
        async with (
            Emulator(projects=2, jobs=30) as emulator,
            otel.client(emulator, page_size=10) as ief,
        ):
            p1, p2 = emulator.project_ids
            pages = [page async for page in ief.iter_pages(p1)]
            pairs = [pair async for pair in ief.iter_jobs_many([p1, p2])]
            listed = await ief.list_jobs(p2)
            count = await ief.count_jobs(p1)
            detail = await ief.get_job(p2, listed[0].job_id)
            with pytest.raises(NotFoundError):
                await ief.get_job(p1, "no-such-job")

        assert (3, 60, 30, 30) == (len(pages), len(pairs), len(listed), count)
        assert detail.job_id == listed[0].job_id
        calls = {s.name: s for s in otel.spans() if s.name not in {"GET", "get_job"}}
        assert {
            "iter_pages",
            "iter_jobs_many",
            "list_jobs",
            "count_jobs",
        } == set(calls)
        assert 2 == calls["iter_jobs_many"].attributes["ief_jobs.projects"]  # type: ignore[index]
        gets = otel.spans("get_job")
        assert ["NotFoundError"] == [
            s.attributes.get("error.type")  # type: ignore[union-attr]
            for s in gets
            if s.status.status_code == StatusCode.ERROR
        ]
        attempts = otel.spans("GET")
        parents = collections.Counter(s.parent.span_id for s in attempts)  # type: ignore[union-attr]
        for call in [*calls.values(), *gets]:
            assert call.context is not None
            assert call.attributes is not None
            assert parents[call.context.span_id] == call.attributes["ief_jobs.requests"]
        assert sum(parents.values()) == len(attempts)
        assert 1 == calls["count_jobs"].attributes["ief_jobs.requests"]  # type: ignore[index]

    async def test_waits_for_a_slot_and_the_rate_limit_are_span_events(
        self, otel: Otel
    ) -> None:
        """Two slots for two projects of two pages in flight each: attempts
        wait for one; with a rate limit, for the limiter too. Each wait is an
        event on the attempt's span."""
        async with (
            Emulator(projects=2, jobs=20) as emulator,
            otel.client(emulator, concurrency=2, page_size=5, rate_limit=500) as ief,
        ):
            pairs = [pair async for pair in ief.iter_jobs_many(emulator.project_ids)]

        assert 40 == len(pairs)
        reasons = collections.Counter(
            e.attributes["ief_jobs.wait.reason"]  # type: ignore[index]
            for s in otel.spans("GET")
            for e in s.events
            if e.name == "ief_jobs.wait"
        )
        assert reasons["in_flight_limit"] > 0
        assert reasons["rate_limit"] > 0

    async def test_no_header_is_added_to_requests(self, otel: Otel) -> None:
        """Inside a caller's span, a traced request carries the same headers as
        an untraced one (no traceparent): what AK/SK signs is unchanged."""
        heard: list[set[str]] = []

        async def answer(request: web.Request) -> web.Response:
            heard.append(set(request.headers))
            return web.json_response({"job_count": 0, "jobs": []})

        tracer = otel.tracer_provider.get_tracer("caller")
        async with _serve(answer) as url:
            async with IefClient(url, auth=TokenAuth("t")) as plain:
                await plain.count_jobs("p1")
            with tracer.start_as_current_span("caller"):
                async with IefClient(
                    url,
                    auth=TokenAuth("t"),
                    tracer_provider=otel.tracer_provider,
                    meter_provider=otel.meter_provider,
                ) as traced:
                    await traced.count_jobs("p1")

        untraced, with_tracing = heard
        assert untraced == with_tracing
        assert not any(h.lower() == "traceparent" for h in with_tracing)
        [count] = otel.spans("count_jobs")
        [caller] = otel.spans("caller")
        assert count.parent is not None
        assert caller.context is not None
        assert caller.context.span_id == count.parent.span_id

    @pytest.mark.parametrize("call", ["count_jobs", "list_jobs"])
    async def test_an_undecodable_answer_is_an_attempt_that_failed(
        self, otel: Otel, call: str
    ) -> None:
        """A 200 whose body is not the documented JSON: its GET span has the
        DecodeError as error.type and an error status, like the call's (a walk,
        which decodes a page when it reaches it, decodes on arrival here)."""

        async def answer(request: web.Request) -> web.Response:
            return web.Response(text="<html>maintenance</html>")

        async with _serve(answer) as url:
            async with IefClient(
                url,
                auth=TokenAuth("t"),
                tracer_provider=otel.tracer_provider,
                meter_provider=otel.meter_provider,
            ) as ief:
                with pytest.raises(DecodeError):
                    await getattr(ief, call)("p1")

        [attempt] = otel.spans("GET")
        assert attempt.attributes is not None
        assert "DecodeError" == attempt.attributes["error.type"]
        assert StatusCode.ERROR == attempt.status.status_code


class TestMetrics:
    async def test_a_faulty_listing_counts_what_happened(self, otel: Otel) -> None:
        """Requests by status class, retries, throttled answers, records, bytes
        and durations agree with what the emulator served."""
        faults = Faults(throttled_rate=0.2, server_error_rate=0.2, retry_after="0")
        async with (
            Emulator(projects=1, jobs=300, faults=faults, seed=3) as emulator,
            otel.client(emulator, concurrency=1, page_size=20) as ief,
        ):
            jobs = await ief.list_jobs(emulator.project_ids[0])
            limit = otel.metrics()["ief_jobs.client.in_flight_limit"]
            stats = emulator.stats

        assert 300 == len(jobs)
        by_class = collections.Counter[str]()
        for status, n in stats.statuses.items():
            by_class[f"{status // 100}xx"] += n
        for status_class, n in by_class.items():
            assert n == otel.total(
                "ief_jobs.client.requests", **{"ief_jobs.status_class": status_class}
            )
        assert stats.statuses[429] == otel.total("ief_jobs.client.throttled")
        assert stats.requests - by_class["2xx"] == otel.total("ief_jobs.client.retries")
        assert otel.total("ief_jobs.client.records") >= 300
        assert otel.total("ief_jobs.client.received") > 0
        [(attributes, value)] = limit
        assert {"server.address": "127.0.0.1"}.items() <= attributes.items()
        assert 1 == value
        durations = otel.metrics()["http.client.request.duration"]
        assert stats.requests == sum(point.count for _, point in durations)
        assert {200, 429} <= {a["http.response.status_code"] for a, _ in durations}


class TestWatch:
    async def test_poll_rounds_are_spans_and_metrics(
        self, otel: Otel, tmp_path: Path
    ) -> None:
        """Each poll round is a span over its requests; events by kind, the
        failing project, checkpoint writes and the last success are metrics."""
        ticks = 0.0

        def clock() -> float:
            return ticks

        health = WatchHealth(10, clock=clock)
        async with (
            Emulator(projects=2, jobs=30) as emulator,
            otel.client(emulator, page_size=10) as ief,
            SqliteCheckpoint(tmp_path / "watch.db") as state,
        ):
            p1, _ = ids = emulator.project_ids

            async def sleep(seconds: float) -> None:
                nonlocal ticks
                ticks += seconds
                emulator.create_job(p1)  # something to report next round

            events = ief.watch_jobs(
                [*ids, "not-a-project"],
                interval=10,
                checkpoint=state,
                report_after=1,
                sleep=sleep,
                health=health,
            )
            kinds: list[str] = []
            async with events:
                async for event in events:
                    kinds.append(event.kind)
                    if event.kind == JobEventKind.CREATED:
                        break

        rounds = otel.spans("watch.poll")
        assert len(rounds) >= 2
        attempts = otel.spans("GET")
        for poll in rounds:
            assert poll.context is not None
            assert poll.attributes is not None
            assert 3 == poll.attributes["ief_jobs.projects"]
            assert "created_at:desc" == poll.attributes["ief_jobs.query.sort"]
            assert 1 == poll.attributes["ief_jobs.projects_failed"]
            under = [a for a in attempts if a.parent == poll.context]
            assert poll.attributes["ief_jobs.requests"] == len(under) > 0
        # events as rounds find them (the last round's were not all taken)
        assert 1 == otel.total(
            "ief_jobs.watch.events", **{"ief_jobs.event.kind": "created"}
        )
        assert len(rounds) == otel.total(
            "ief_jobs.watch.events", **{"ief_jobs.event.kind": "project_failed"}
        )
        assert 1 == otel.total("ief_jobs.watch.projects_failing")
        metrics = otel.metrics()
        [(_, writes)] = metrics["ief_jobs.watch.checkpoint.write.duration"]
        assert writes.count >= 1
        [(_, rounds_point)] = metrics["ief_jobs.watch.poll.duration"]
        assert len(rounds) == rounds_point.count
        assert 0 == otel.total("ief_jobs.watch.since_last_success")
        assert health.check()[0]


class TestHealth:
    def test_three_intervals_without_a_successful_round_is_unhealthy(self) -> None:
        """Healthy while starting and after a round with a project polled;
        unhealthy, with its reason, three intervals after the last one."""
        now = 100.0
        health = WatchHealth(5, clock=lambda: now)
        assert health.check()[0]
        now += 15.1
        healthy, reason = health.check()
        assert not healthy
        assert "no poll round has succeeded in 15.1 s" in reason
        health.round_done(polled=1, failed=2)
        assert (
            True,
            "ok: last successful poll round 0.0 s ago, 2 project(s) failing",
        ) == health.check()
        health.round_done(polled=0, failed=3)
        now += 15.0
        assert health.check()[0]
        now += 0.2
        healthy, reason = health.check()
        assert not healthy
        assert "\n" not in reason
        assert "last successful poll round 15.2 s ago" in reason
        health.round_done(polled=0, failed=0)  # a shard with no project
        assert health.check()[0]

    def test_the_interval_is_checked(self) -> None:
        with pytest.raises(ValueError, match="interval"):
            WatchHealth(0)
        with pytest.raises(TypeError, match="interval"):
            WatchHealth("5")  # type: ignore[arg-type]


class TestSecrets:
    async def test_no_span_metric_or_log_line_carries_the_token(
        self, otel: Otel, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A hostile server echoes the token in its bodies, request ids and
        error messages: no span attribute or event, metric label, or JSON log
        line (every logger at DEBUG) repeats it."""
        token = TOKEN
        answers = iter([503, 429, 400])

        async def echo(request: web.Request) -> web.Response:
            heard = request.headers.get("X-Auth-Token", "")
            status = next(answers, 500)
            body = {"error_code": f"IEF.{heard}", "error_msg": f"bad token {heard}"}
            return web.json_response(
                body,
                status=status,
                headers={"X-Request-Id": heard, "Retry-After": "0"},
            )

        caplog.set_level(logging.DEBUG)
        async with _serve(echo) as url:
            async with IefClient(
                url,
                auth=TokenAuth(token),
                retry=RetryPolicy(attempts=5, sleep=no_sleep),
                tracer_provider=otel.tracer_provider,
                meter_provider=otel.meter_provider,
            ) as ief:
                with pytest.raises(ApiError):
                    await ief.count_jobs("p1")
                health = WatchHealth(1)
                async with ief.watch_jobs(
                    ["p1"], report_after=1, sleep=no_sleep, health=health
                ) as events:
                    await anext(events)  # project_failed

        spans = otel.spans()
        assert len(otel.spans("GET")) >= 4
        seen: list[str] = []
        for span in spans:
            seen.append(span.name)
            seen.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
            for event in span.events:
                seen.append(event.name)
                seen.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
        for name, points in otel.metrics().items():
            seen.append(name)
            seen.extend(f"{k}={v}" for attrs, _ in points for k, v in attrs.items())
        formatter = JsonFormatter()
        ours = [r for r in caplog.records if r.name == "ief_jobs.watch"]
        assert ours
        seen.extend(formatter.format(record) for record in ours)
        assert "error.type=ServerError" in seen
        assert not [text for text in seen if token in text]


class TestProviders:
    def test_a_provider_that_is_not_one_is_refused_at_the_constructor(self) -> None:
        """Each argument names itself in its TypeError, before any request."""
        with pytest.raises(TypeError, match="tracer_provider must be"):
            IefClient("http://127.0.0.1:1", auth=TokenAuth("t"), tracer_provider=1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="meter_provider must be"):
            IefClient("http://127.0.0.1:1", auth=TokenAuth("t"), meter_provider="m")  # type: ignore[arg-type]


class TestOff:
    async def test_with_the_api_and_no_sdk_requests_meet_no_telemetry(self) -> None:
        """The API installed but no provider given or set globally: the client
        has its telemetry, but no call or request reports to it."""
        async with Emulator(projects=1, jobs=5) as emulator:
            async with IefClient(
                emulator.base_url, auth=TokenAuth(emulator.token)
            ) as ief:
                assert ief._transport.telemetry is not None
                assert ief._transport.live_telemetry() is None
                assert None is ief._call("count_jobs", "p1", None)
                assert 5 == len(await ief.list_jobs(emulator.project_ids[0]))
