"""
What ``ief-jobs watch`` needs to run as a daemon: ``/metrics`` and ``/healthz``
on a small aiohttp server, and log lines for a log collector.

``/metrics`` serves the client's and the watch's OpenTelemetry instruments (the
same ones an application reads through its own SDK) in Prometheus' text format,
rendered here from the SDK's in-memory reader at each scrape. The official
``opentelemetry-exporter-prometheus`` serves from a thread of its own with
``prometheus_client``'s HTTP server; we already run an event loop and aiohttp,
and rendering cumulative points is a page of code. ``/healthz`` answers from a
`WatchHealth`: 200 while a poll round succeeded within three intervals, 503
otherwise, each with a one-line reason.

Needs the ``daemon`` extra (``opentelemetry-sdk``) for ``/metrics``; logging
needs nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from ._telemetry import WatchHealth

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric

__all__ = ["JsonFormatter", "configure_logging", "metrics_reader", "serve"]

_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_UNITS: Final = {"s": "seconds", "By": "bytes", "ms": "milliseconds"}
_NOT_NAME: Final = re.compile(r"[^a-zA-Z0-9_:]")


# -- logging -------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """
    One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message`` and ``project`` (the project a line is about, or null).
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "project": getattr(record, "project", None),
        }
        if record.exc_info and record.exc_info[0] is not None:
            # the class only: a traceback's text may quote what a server said
            line["error"] = record.exc_info[0].__qualname__
        return json.dumps(line, ensure_ascii=False)


def configure_logging(verbosity: int, log_format: str) -> None:
    """
    Log the ``ief_jobs`` logger to stderr: INFO with one ``-v``, DEBUG with
    more; as text, or as JSON lines with *log_format* ``"json"``.
    """
    if verbosity <= 0:
        return
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    logger = logging.getLogger("ief_jobs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)


# -- /metrics --------------------------------------------------------------------


def metrics_reader() -> InMemoryMetricReader:
    """
    An SDK reader, installed as the global meter provider's, that `serve`
    renders at each scrape.

    Raises:
        ImportError: ``opentelemetry-sdk`` is not installed (the message says
            which extra to install).
    """
    try:
        from opentelemetry import metrics  # noqa: PLC0415 (only for --metrics-port)
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
            InMemoryMetricReader,
        )
    except ImportError:
        msg = "--metrics-port needs the daemon extra: pip install 'ief-jobs[daemon]'"
        raise ImportError(msg) from None
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def _name(metric: Metric) -> str:
    name = _NOT_NAME.sub("_", metric.name)
    unit = _UNITS.get(metric.unit or "")
    if unit and not name.endswith(unit):
        name = f"{name}_{unit}"
    return name


def _value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


def _labels(attributes: Any, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [*((str(k), str(v)) for k, v in (attributes or {}).items()), *extra]
    if not pairs:
        return ""
    escaped = (
        (
            _NOT_NAME.sub("_", k),
            v.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n"),
        )
        for k, v in pairs
    )
    return "{" + ",".join(f'{k}="{v}"' for k, v in escaped) + "}"


def _histogram_lines(name: str, point: Any) -> Iterator[str]:
    cumulative = 0
    for bound, count in zip(
        [*point.explicit_bounds, math.inf], point.bucket_counts, strict=True
    ):
        cumulative += count
        labels = _labels(point.attributes, [("le", _value(float(bound)))])
        yield f"{name}_bucket{labels} {cumulative}"
    yield f"{name}_sum{_labels(point.attributes)} {_value(point.sum)}"
    yield f"{name}_count{_labels(point.attributes)} {point.count}"


def _metric_lines(metric: Metric) -> Iterator[str]:
    from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415 (with --metrics-port only)
        Histogram,
        Sum,
    )

    name = _name(metric)
    data = metric.data
    if isinstance(data, Histogram):
        kind = "histogram"
    elif isinstance(data, Sum) and data.is_monotonic:
        kind, name = "counter", f"{name}_total"
    else:  # a gauge, or an up-down counter
        kind = "gauge"
    yield f"# HELP {name} {metric.description or metric.name}"
    yield f"# TYPE {name} {kind}"
    for point in data.data_points:
        if kind == "histogram":
            yield from _histogram_lines(name, point)
        else:
            yield f"{name}{_labels(point.attributes)} {_value(point.value)}"  # type: ignore[union-attr]


def render(reader: InMemoryMetricReader) -> str:
    """What the reader collects now, as Prometheus text."""
    data = reader.get_metrics_data()
    lines: list[str] = []
    for resource in [] if data is None else data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                lines.extend(_metric_lines(metric))
    return "\n".join(lines) + "\n"


# -- the server ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(
    host: str, port: int, reader: InMemoryMetricReader, health: WatchHealth
) -> AsyncIterator[int]:
    """Serve ``/metrics`` and ``/healthz`` on *host*:*port*; yield the port bound."""

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(
            text=render(reader), headers={"Content-Type": _CONTENT_TYPE}
        )

    async def healthz(_: web.Request) -> web.Response:
        healthy, reason = health.check()
        return web.Response(text=reason + "\n", status=200 if healthy else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server: Any = site._server  # noqa: SLF001 (aiohttp keeps the socket there)
        yield int(server.sockets[0].getsockname()[1])
    finally:
        await runner.cleanup()
