"""
Draw a throttled listing from its own metrics: requests, retries and the
adaptive in-flight limit over time.

    python benchmarks/chart_throttled.py [--out benchmarks/throttled.png]

Ten projects of 2,000 jobs are listed at once (``iter_jobs_many``, concurrency
32, pages of 50) against the emulator behind a gateway that answers 429 with
``Retry-After: 0`` above 8 requests in flight, 5 ms a request. The client's
metrics are read through the OpenTelemetry SDK's in-memory reader every 20 ms,
the way a Prometheus scrape reads them, and drawn (``bench`` extra: matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ief_jobs import IefClient, TokenAuth
from ief_jobs.emulator import Emulator, Faults

_WANTED = {
    "ief_jobs.client.requests": "requests",
    "ief_jobs.client.retries": "retries",
    "ief_jobs.client.in_flight_limit": "limit",
    "ief_jobs.client.in_flight": "in_flight",
}


def _sample(reader: InMemoryMetricReader) -> dict[str, float]:
    found = dict.fromkeys(_WANTED.values(), 0.0)
    data = reader.get_metrics_data()
    for resource in [] if data is None else data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                key = _WANTED.get(metric.name)
                if key is not None:
                    points: Any = metric.data.data_points
                    found[key] = sum(point.value for point in points)
    return found


async def _listing(reader: InMemoryMetricReader, provider: MeterProvider) -> list[Any]:
    faults = Faults(concurrency_limit=8, retry_after="0", latency=0.005)
    samples: list[tuple[float, dict[str, float]]] = []
    async with (
        Emulator(projects=10, jobs=2000, faults=faults) as emulator,
        IefClient(
            emulator.base_url,
            auth=TokenAuth(emulator.token),
            page_size=50,
            meter_provider=provider,
        ) as ief,
    ):
        started = time.perf_counter()

        async def sample() -> None:
            while True:
                samples.append((time.perf_counter() - started, _sample(reader)))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        records = sum([1 async for _ in ief.iter_jobs_many(emulator.project_ids)])
        sampler.cancel()
        samples.append((time.perf_counter() - started, _sample(reader)))
    print(
        f"{records} records, {samples[-1][1]['requests']:.0f} requests, "
        f"{samples[-1][1]['retries']:.0f} retries in {samples[-1][0]:.2f} s"
    )
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/throttled.png")
    args = parser.parse_args()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    samples = asyncio.run(_listing(reader, provider))
    times = [t for t, _ in samples]
    figure, (counts, gauges) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    for key in ("requests", "retries"):
        counts.plot(times, [s[key] for _, s in samples], label=key)
    counts.set_ylabel("cumulative")
    counts.legend(loc="upper left")
    counts.set_title("A throttled listing, from ief-jobs' own metrics")
    gauges.step(
        times,
        [s["limit"] for _, s in samples],
        where="post",
        label="adaptive in-flight limit",
    )
    gauges.plot(
        times, [s["in_flight"] for _, s in samples], label="in flight", alpha=0.6
    )
    gauges.axhline(8, color="grey", linestyle=":", label="gateway's limit (8)")
    gauges.set_ylabel("requests")
    gauges.set_xlabel("seconds")
    gauges.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(args.out, dpi=100)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
