"""
Interleaved repeats and paired ratios: what the benchmark scripts share.

On a shared machine the speed changes from moment to moment by more than the
gaps we measure. So every repeat runs every strategy once, back to back (every
other repeat in reverse order, so none always runs first), and the figure is the
median over repeats of ``ours / baseline`` *within one repeat*: a slow moment
slows both sides of a pair. The spread (lowest to highest pair) is printed with
it, in wall and CPU seconds.
"""

from __future__ import annotations

import gc
import importlib
import io
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import attrs

from ief_jobs import codec

T = TypeVar("T")


@attrs.frozen
class Timings:
    """Per strategy, one wall and one CPU time per repeat, and what each run gave."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]
    results: dict[str, Any]

    def median_wall(self, name: str) -> float:
        return statistics.median(self.wall[name])

    def median_cpu(self, name: str) -> float:
        return statistics.median(self.cpu[name])

    def ratios(self, ours: str, baseline: str, *, cpu: bool = False) -> list[float]:
        """``ours / baseline`` in each repeat."""
        times = self.cpu if cpu else self.wall
        return [a / b for a, b in zip(times[ours], times[baseline], strict=True)]

    def paired(self, ours: str, baseline: str) -> str:
        """The median of paired ratios and their spread, wall then CPU."""
        wall = self.ratios(ours, baseline)
        cpu = self.ratios(ours, baseline, cpu=True)
        return (
            f"{statistics.median(wall):.2f}x wall ({min(wall):.2f}-{max(wall):.2f}), "
            f"{statistics.median(cpu):.2f}x cpu ({min(cpu):.2f}-{max(cpu):.2f})"
        )


def interleaved(
    repeats: int,
    runs: dict[str, Callable[[int], Any]],
    *,
    slices: int = 1,
    check: Callable[[str, list[Any]], None] = lambda _name, _results: None,
) -> Timings:
    """
    Time every strategy once per repeat, order alternating; *check* each result.

    With *slices* > 1 a repeat is cut finer: each strategy runs on slice 0, then
    each on slice 1 (the other way round), and so on, and a repeat's time is the
    sum over its slices. Pairs of a few milliseconds meet the same moment of a
    noisy machine far more often than pairs of a second.
    """
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    results: dict[str, Any] = {}
    order = list(runs.items())
    turn = 0
    for _ in range(repeats):
        spent = {name: [0.0, 0.0] for name in runs}
        got: dict[str, list[Any]] = {name: [] for name in runs}
        for piece in range(slices):
            for name, run in order if turn % 2 == 0 else reversed(order):
                gc.collect()  # the garbage of the run before is not this one's
                started, cpu_started = time.perf_counter(), time.process_time()
                got[name].append(run(piece))
                spent[name][0] += time.perf_counter() - started
                spent[name][1] += time.process_time() - cpu_started
            turn += 1
        for name in runs:
            wall[name].append(spent[name][0])
            cpu[name].append(spent[name][1])
            check(name, got[name])
            results[name] = got[name]
    return Timings(wall=wall, cpu=cpu, results=results)


@contextmanager
def pure_path(*, cold: bool = False) -> Iterator[None]:
    """
    Decode on the pure path meanwhile, whatever is installed; *cold*: from an
    empty hour cache, and leave none behind.

    A user runs one path. The pure path's cache of hour starts, made between
    the records' own datetimes, pins thousands of half-used pools of the
    allocator, which the compiled path's datetimes fill afterwards: its walks
    ran 9-14% slower (paired across two processes) until the cache was cleared.
    A whole listing starts cold, as a new process would; slices of one
    workload (``bench_decode``) keep the cache warm, as one long run would.
    """
    before = codec._compiled  # noqa: SLF001 (the switch the tests use too)
    hours = codec._hour_starts  # noqa: SLF001
    if cold:
        hours.clear()
    codec._use(None)  # noqa: SLF001
    try:
        yield
    finally:
        codec._use(before)  # noqa: SLF001
        if cold:
            hours.clear()


def pure(run: Callable[..., T], *, cold: bool = False) -> Callable[..., T]:
    """*run*, on the pure decoding path (*cold*: as `pure_path`)."""

    def on_pure_path(*args: Any) -> T:
        with pure_path(cold=cold):
            return run(*args)

    return on_pure_path


def machine() -> str:
    """The CPU model, its count and the Python version: what a figure was run on."""
    import os  # noqa: PLC0415
    import platform  # noqa: PLC0415

    model = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:  # noqa: PTH123
            model = next(
                line.split(":", 1)[1].strip()
                for line in info
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


_ABSOLUTE = re.compile(r"^(\s*)from ief_jobs([. ])", re.MULTILINE)


def base_package(commit: str, into: Path) -> ModuleType:
    """
    The package as it was at *commit*, importable as ``ief_jobs_base``.

    Copied out of git into *into*, its imports of itself renamed, so an older
    release runs beside this tree in one process, on one emulator.
    """
    root = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(  # noqa: S603
        ["git", "archive", commit, "src/ief_jobs"],  # noqa: S607
        capture_output=True,
        check=True,
        cwd=root,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "ief_jobs_base"
    shutil.move(into / "src" / "ief_jobs", package)
    # the listing subpackage imports its siblings by absolute name: point
    # those at the copy, or its walk would check our classes, not its own
    for module in package.rglob("*.py"):
        source = module.read_text()
        module.write_text(_ABSOLUTE.sub(r"\1from ief_jobs_base\2", source))
    sys.path.insert(0, str(into))
    return importlib.import_module("ief_jobs_base")
