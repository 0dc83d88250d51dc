"""
``ief-jobs watch --metrics-port 0`` as a daemon: a real scrape of /metrics, a
/healthz that turns 503 when the emulator stops answering, JSON log lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from ief_jobs._daemon import JsonFormatter, configure_logging, render
from ief_jobs.emulator import Emulator

_SERVING = re.compile(rb"ief-jobs: serving (http://127\.0\.0\.1:\d+)/metrics")


async def _until(
    session: aiohttp.ClientSession, url: str, ready: str, want: int
) -> str:
    """GET *url* until it answers *want* with *ready* in it (a few seconds at most)."""
    for _ in range(100):
        async with session.get(url) as response:
            text = await response.text()
            if response.status == want and ready in text:
                return text
        await asyncio.sleep(0.05)
    pytest.fail(f"{url} never answered {want} with {ready!r}: {text!r}")


@pytest.fixture(name="daemon")
async def _daemon() -> AsyncIterator[tuple[Emulator, asyncio.subprocess.Process]]:
    async with Emulator(projects=2, jobs=30) as emulator:
        env = {**os.environ, "IEF_TOKEN": emulator.token}
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from ief_jobs.cli import main; main()",
            "watch",
            "--endpoint",
            emulator.base_url,
            "--interval",
            "0.2",
            "--metrics-port",
            "0",
            "-v",
            "--log-format",
            "json",
            *emulator.project_ids,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            yield emulator, child
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()


async def test_metrics_scrape_health_and_json_logs(
    daemon: tuple[Emulator, asyncio.subprocess.Process],
) -> None:
    """/metrics parses as Prometheus text with the client's and the watch's
    metrics; /healthz is 200 while polls succeed and 503, with its reason,
    once the emulator stops answering; every log line is one JSON object
    without the token."""
    emulator, child = daemon
    assert child.stderr is not None
    first = await asyncio.wait_for(child.stderr.readline(), 30)
    found = _SERVING.search(first)
    assert found, first
    base = found.group(1).decode()
    async with aiohttp.ClientSession() as session:
        await _until(session, f"{base}/healthz", "ok: last successful", 200)
        text = await _until(
            session,
            f"{base}/metrics",
            "ief_jobs_watch_poll_duration_seconds_count",
            200,
        )
        async with session.get(f"{base}/metrics") as response:
            content_type = response.headers["Content-Type"]
        families = {f.name: f for f in text_string_to_metric_families(text)}
        await emulator.aclose()  # the emulator stops answering
        reason = await _until(session, f"{base}/healthz", "limit 0.6 s", 503)

    assert content_type.startswith("text/plain; version=0.0.4")
    assert {
        "ief_jobs_client_requests",
        "http_client_request_duration_seconds",
        "ief_jobs_client_in_flight_limit",
        "ief_jobs_client_in_flight",
        "ief_jobs_client_records",
        "ief_jobs_client_received_bytes",
        "ief_jobs_watch_poll_duration_seconds",
        "ief_jobs_watch_since_last_success_seconds",
        "ief_jobs_watch_projects_failing",
    } <= set(families)
    assert "counter" == families["ief_jobs_client_requests"].type
    assert "histogram" == families["http_client_request_duration_seconds"].type
    [limit] = families["ief_jobs_client_in_flight_limit"].samples
    assert 32 == limit.value
    assert 1 == len(reason.strip().splitlines())
    assert "last successful poll round" in reason
    assert emulator.token not in text

    child.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(child.communicate(), 30)
    lines = stderr.decode().splitlines()
    assert lines
    logged = [json.loads(line) for line in lines]
    for line in logged:
        assert {"time", "level", "logger", "message", "project"} == set(line)
    assert {"ief_jobs.watch"} <= {line["logger"] for line in logged}
    assert set(emulator.project_ids) & {line["project"] for line in logged}
    assert emulator.token not in stderr.decode()


def test_the_docs_print_a_listings_spans_to_the_console() -> None:
    """The operating guide's console-exporter snippet runs and prints the list_jobs
    span and its three GET spans (250 jobs in pages of 100)."""
    readme = (
        Path(__file__).parents[2] / "docs" / "guides" / "observability.md"
    ).read_text()
    after = readme.split("<!-- console-spans:", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    done = subprocess.run(  # noqa: S603 (our own interpreter, our README)
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = re.findall(r'^    "name": "([^"]+)"', done.stdout, flags=re.MULTILINE)
    assert ["GET", "GET", "GET", "list_jobs"] == sorted(names)
    assert done.stdout.rstrip().endswith("250 jobs")


def test_render_gives_prometheus_text_of_every_kind() -> None:
    """Counters end in _total, units become suffixes, histogram buckets are
    cumulative up to +Inf, an up-down counter is a gauge, and a label value
    with quotes, backslashes and newlines survives the round trip."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("test")
    awkward = 'a "quoted" \\ value\non two lines'
    meter.create_counter("ief.received", unit="By").add(3, {"what.it": awkward})
    durations = meter.create_histogram(
        "ief.duration", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0]
    )
    durations.record(0.5)
    durations.record(2.0)
    meter.create_up_down_counter("ief.level", unit="{thing}").add(-2)

    families = {f.name: f for f in text_string_to_metric_families(render(reader))}
    provider.shutdown()

    counter = families["ief_received_bytes"]
    assert "counter" == counter.type
    [sample] = counter.samples
    assert ("ief_received_bytes_total", {"what_it": awkward}, 3.0) == (
        sample.name,
        sample.labels,
        sample.value,
    )
    histogram = families["ief_duration_seconds"]
    assert "histogram" == histogram.type
    buckets = {
        s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")
    }
    assert {"0.1": 0.0, "1.0": 1.0, "+Inf": 2.0} == buckets
    sums = {s.name: s.value for s in histogram.samples if "le" not in s.labels}
    assert {"ief_duration_seconds_sum": 2.5, "ief_duration_seconds_count": 2.0} == sums
    assert ("gauge", -2.0) == (
        families["ief_level"].type,
        families["ief_level"].samples[0].value,
    )


class TestLogging:
    def test_verbosity_and_format_pick_level_and_formatter(self) -> None:
        """No -v: nothing added; -v: INFO as text; -vv: DEBUG as JSON."""
        logger = logging.getLogger("ief_jobs")
        before, level = list(logger.handlers), logger.level
        try:
            configure_logging(0, "json")
            assert before == logger.handlers
            configure_logging(1, "text")
            assert logging.INFO == logger.level
            assert not isinstance(logger.handlers[-1].formatter, JsonFormatter)
            configure_logging(2, "json")
            assert logging.DEBUG == logger.level
            assert isinstance(logger.handlers[-1].formatter, JsonFormatter)
        finally:
            logger.handlers[:] = before
            logger.setLevel(level)

    def test_a_json_line_names_an_exception_by_its_class_only(self) -> None:
        """A traceback's text may quote a server: only the class is kept."""
        try:
            raise ValueError("server said s3cr3t")  # noqa: TRY301
        except ValueError:
            record = logging.LogRecord(
                "ief_jobs.watch",
                logging.INFO,
                __file__,
                1,
                "poll of %s",
                ("p1",),
                sys.exc_info(),
            )
        record.project = "p1"
        line = json.loads(JsonFormatter().format(record))
        assert "s3cr3t" not in json.dumps(line)
        assert ("ValueError", "p1", "poll of p1", "INFO") == (
            line["error"],
            line["project"],
            line["message"],
            line["level"],
        )
        assert line["time"].endswith("+00:00")
