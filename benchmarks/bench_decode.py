"""
Decode the same pre-serialised pages three ways and print time per record.

    python benchmarks/bench_decode.py [--records 100000] [--page-size 100]

Baselines, in one run on the same bytes: ``json.loads`` into dicts and
``orjson.loads`` into dicts (the floor); ours decodes into `JobPage`s of typed,
validated `BatchJob` records. Prints our ratio to each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import orjson

from ief_jobs.codec import decode_page
from ief_jobs.emulator import generate_jobs


def _pages(records: int, page_size: int) -> list[bytes]:
    jobs = generate_jobs("bench-project", records, seed=7)
    return [
        orjson.dumps({"job_count": records, "jobs": jobs[i : i + page_size]})
        for i in range(0, records, page_size)
    ]


def _median_of_interleaved(
    repeats: int, runs: dict[str, Callable[[], int]]
) -> dict[str, tuple[float, float, int]]:
    """Per decoder: median wall seconds, median CPU seconds, records decoded."""
    # one round runs every decoder once, so a noisy moment hits them alike;
    # every other round in reverse, so none always runs first
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    counts = dict.fromkeys(runs, 0)
    order = list(runs.items())
    for round_ in range(repeats):
        for name, run in order if round_ % 2 == 0 else reversed(order):
            start, cpu_start = time.perf_counter(), time.process_time()
            counts[name] = run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    return {
        name: (statistics.median(wall[name]), statistics.median(cpu[name]), n)
        for name, n in counts.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    pages = _pages(args.records, args.page_size)

    def with_json() -> int:
        return sum(len(json.loads(p)["jobs"]) for p in pages)

    def with_orjson() -> int:
        return sum(len(orjson.loads(p)["jobs"]) for p in pages)

    def with_ief_jobs() -> int:
        return sum(
            len(decode_page(p, project_id="p", offset=i).jobs)
            for i, p in enumerate(pages)
        )

    results = _median_of_interleaved(
        args.repeats,
        {
            "json.loads -> dicts": with_json,
            "orjson.loads -> dicts": with_orjson,
            "ief_jobs.decode_page -> JobPage": with_ief_jobs,
        },
    )
    ours, ours_cpu, _ = results["ief_jobs.decode_page -> JobPage"]
    print(
        f"{args.records:,} records in pages of {args.page_size}, "
        f"medians of {args.repeats} interleaved runs"
    )
    print(f"  {'':34} {'wall':>8}     {'cpu':>8}    {'wall per record':>15}")
    for name, (seconds, cpu_seconds, count) in results.items():
        if count != args.records:
            raise SystemExit(f"{name} decoded {count} records, not {args.records}")
        per_record = seconds / count * 1e9
        print(
            f"  {name:34} {seconds * 1e3:8.1f} ms  {cpu_seconds * 1e3:8.1f} ms"
            f"  {per_record:9.0f} ns/record"
        )
    for name in ("json.loads -> dicts", "orjson.loads -> dicts"):
        _, wall_s, cpu_s = name, results[name][0], results[name][1]
        print(
            f"  ours / {name}: {ours / wall_s:.2f}x wall, {ours_cpu / cpu_s:.2f}x cpu"
        )


if __name__ == "__main__":
    main()
