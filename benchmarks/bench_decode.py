"""
Decode the same pre-serialised pages four ways and print time per record.

    python benchmarks/bench_decode.py [--records 100000] [--page-size 100]
        [--repeats 9]

Baselines, in one run on the same bytes: ``json.loads`` into dicts and
``orjson.loads`` into dicts (the floor); ours decodes into `JobPage`s of typed,
validated `BatchJob` records, on the compiled path (the ``fast`` extra, msgspec)
and on the pure path, side by side. Each repeat runs all four back to back (order
alternating); the ratios printed are medians of the ratios within one repeat,
with their spread (see ``_paired.py``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from _paired import interleaved, machine, pure

from ief_jobs import decoder_name
from ief_jobs.codec import decode_page
from ief_jobs.emulator import generate_jobs

OURS = "ief_jobs.decode_page, fast"
OURS_PURE = "ief_jobs.decode_page, pure"
BASELINES = ("orjson.loads -> dicts", "json.loads -> dicts")


def _pages(records: int, page_size: int) -> list[bytes]:
    jobs = generate_jobs("bench-project", records, seed=7)
    return [
        orjson.dumps({"job_count": records, "jobs": jobs[i : i + page_size]})
        for i in range(0, records, page_size)
    ]


def _strategies(slices: list[list[bytes]]) -> dict[str, Callable[[int], int]]:
    def with_json(piece: int) -> int:
        return sum(len(json.loads(p)["jobs"]) for p in slices[piece])

    def with_orjson(piece: int) -> int:
        return sum(len(orjson.loads(p)["jobs"]) for p in slices[piece])

    def with_ief_jobs(piece: int) -> int:
        return sum(
            len(decode_page(p, project_id="p", offset=i).jobs)
            for i, p in enumerate(slices[piece])
        )

    runs = {
        "json.loads -> dicts": with_json,
        "orjson.loads -> dicts": with_orjson,
        OURS_PURE: pure(with_ief_jobs),
    }
    if decoder_name() != "pure":
        runs[OURS] = with_ief_jobs
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--slices", type=int, default=20, help="pairs per repeat (finer: less noise)"
    )
    args = parser.parse_args()
    pages = _pages(args.records, args.page_size)
    step = -(-len(pages) // args.slices)
    slices = [pages[i : i + step] for i in range(0, len(pages), step)]
    runs = _strategies(slices)

    def check(name: str, counts: list[int]) -> None:
        if sum(counts) != args.records:
            raise SystemExit(f"{name} decoded {counts} records, not {args.records}")

    timings = interleaved(args.repeats, runs, slices=len(slices), check=check)
    print(f"{datetime.now(UTC).date()}, {machine()}, decoder {decoder_name()}")
    print(
        f"{args.records:,} records in pages of {args.page_size}, "
        f"{args.repeats} repeats of {len(slices)} interleaved slices "
        "(order alternating), medians"
    )
    print(f"  {'':30} {'wall':>8}     {'cpu':>8}    {'wall per record':>15}")
    for name in runs:
        seconds = timings.median_wall(name)
        cpu_ms = timings.median_cpu(name) * 1e3
        print(
            f"  {name:30} {seconds * 1e3:8.1f} ms  {cpu_ms:8.1f} ms"
            f"  {seconds / args.records * 1e9:9.0f} ns/record"
        )
    print("  paired ratios, median (lowest-highest):")
    for ours in (OURS, OURS_PURE):
        if ours not in runs:
            print(f"  {ours}: msgspec not installed (pip install 'ief-jobs[fast]')")
            continue
        for baseline in BASELINES:
            print(f"  {ours} / {baseline}: {timings.paired(ours, baseline)}")


if __name__ == "__main__":
    main()
