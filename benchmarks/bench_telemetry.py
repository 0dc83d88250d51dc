"""
What telemetry costs a listing, measured in one run against one emulator.

    python benchmarks/bench_telemetry.py [--repeats 9] [--base e378bab]
        [--jobs 10000] [--page-size 10] [--latency 0.001]

The baseline is the library *without the hooks*: the tree of commit *base*,
copied out of git as the package ``ief_jobs_base`` and imported beside this
one. Against it, in pairs (baseline and variant back to back, the order
alternating), for each repeat:

* off: this tree with telemetry off, as without the ``otel`` extra (the hooks'
  ``is None`` tests only);
* api: this tree with ``opentelemetry-api`` installed and no SDK configured
  (the global no-op providers: what a user who installs the extra and never
  configures it pays);
* sdk: the SDK's tracer provider with an in-memory exporter behind a simple
  span processor, and its meter provider with an in-memory reader.

The default listing is request-bound on purpose (1 project x 10,000 jobs in
pages of 10, 1 ms a request: 1,000 requests), the worst case for a per-request
cost. The emulator runs in a child process, so the CPU seconds are the
client's. Printed: the median of the paired ratios (variant / baseline) of wall
and CPU seconds, with their range.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from _paired import base_package
from bench_listing import _start_emulator as start_emulator  # same emulator
from bench_listing import client
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import ief_jobs


async def _list(
    package: ModuleType,
    info: dict[str, Any],
    page_size: int,
    *,
    off: bool = False,
    **providers: Any,
) -> int:
    async with client(info, page_size, package, **providers) as ief:
        if off:  # as without the otel extra: the hooks' None tests only
            ief._transport.telemetry = None  # noqa: SLF001
        return sum([1 async for _ in ief.iter_jobs(info["project_ids"][0])])


def _sdk_providers() -> dict[str, Any]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return {"tracer_provider": tracer_provider, "meter_provider": meter_provider}


def _timed(run: Callable[[], int], expected: int) -> tuple[float, float]:
    gc.collect()  # the garbage of the run before is not this run's cost
    wall, cpu = time.perf_counter(), time.process_time()
    records = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if records != expected:
        msg = f"listed {records} records, not {expected}"
        raise AssertionError(msg)
    return wall, cpu


def _variants(info: dict[str, Any], page_size: int) -> dict[str, Callable[[], int]]:
    return {
        "off": lambda: asyncio.run(_list(ief_jobs, info, page_size, off=True)),
        "api": lambda: asyncio.run(_list(ief_jobs, info, page_size)),
        "sdk": lambda: asyncio.run(
            _list(ief_jobs, info, page_size, **_sdk_providers())
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--base", default="e378bab")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.001)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = base_package(args.base, Path(tmp))
        child, info = start_emulator(1, args.jobs, args.latency)
        try:
            variants = _variants(info, args.page_size)
            baseline = lambda: asyncio.run(  # noqa: E731
                _list(base, info, args.page_size)
            )
            _timed(baseline, args.jobs)  # warm up both sides
            for run in variants.values():
                _timed(run, args.jobs)
            ratios: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
            for repeat in range(args.repeats):
                for name, run in variants.items():
                    pair = [baseline, run] if repeat % 2 else [run, baseline]
                    first, second = (_timed(r, args.jobs) for r in pair)
                    ours, theirs = (second, first) if repeat % 2 else (first, second)
                    ratios[name].append((ours[0] / theirs[0], ours[1] / theirs[1]))
        finally:
            child.terminate()
            child.wait()

    requests = -(-args.jobs // args.page_size)
    print(
        f"1 project x {args.jobs} jobs, pages of {args.page_size} "
        f"({requests} requests), {args.latency * 1000:g} ms a request; "
        f"baseline {args.base} (no hooks); {args.repeats} paired repeats"
    )
    print(f"{'variant':8} {'wall ratio':>22} {'CPU ratio':>22}")
    for name, pairs in ratios.items():
        cells = []
        for index in (0, 1):
            values = [pair[index] for pair in pairs]
            cells.append(
                f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
            )
        print(f"{name:8} {cells[0]:>22} {cells[1]:>22}")


if __name__ == "__main__":
    main()
