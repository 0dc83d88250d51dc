"""
The one search the walk runs when a read misses what it looks for.

Two things are looked for: the last record yielded, when records moved past a
boundary (the re-read), and the jobs sharing a ``created_at`` that a boundary
split (the tie mending). Both narrow in on one ``created_at`` from both sides:
a read that sorts before it says look further on, one that sorts after it
says look back, a first step (`Search` says which) and then twice as far
after every miss; once both sides are known, the next read goes halfway
between them. ``created_at`` only hints where to look (it never tells a
record's identity): two hints that contradict each other mean the records
moved meanwhile, so the search looks afresh; where reads show no order by
``created_at`` at all, it looks both ways in turn around where it began.
"""

from __future__ import annotations

from datetime import datetime

from ief_jobs.models import BatchJob

__all__ = ["Search", "side_of"]


def side_of(
    jobs: tuple[BatchJob, ...], key: datetime, newest_first: bool | None
) -> int:
    """
    Whether all of *jobs* sort before a job created at *key* (1) or after it
    (-1), by their own order of created_at (or, where they share one, by
    *newest_first*, the order reads showed so far); 0 when that does not tell.
    """
    if not jobs:
        return 0
    times = [job.created_at for job in jobs]
    head, tail = times[0], times[-1]
    ascending = head < tail and times == sorted(times)
    descending = head > tail and times == sorted(times, reverse=True)
    if head == tail and newest_first is not None and times.count(head) == len(times):
        ascending, descending = not newest_first, newest_first
    if ascending:
        return 1 if tail < key else -1 if head > key else 0
    if descending:
        return 1 if tail > key else -1 if head < key else 0
    return 0


class Search:
    """
    Where to read next, from the reads that missed the records created at
    *key*; *origin* is where they were last seen, *first* the lowest offset
    the walk may read, *unit* the first step in records: the re-read seeks
    one record, which most often moved a few places (2); the tie mending
    seeks records that a whole read missed, so it steps a read's width.

    Example::

        search = Search(key, origin=at, first=0, newest_first=True, unit=2)
        while found nothing in the read of *limit* records from *at*:
            search.missed(at, jobs, search.side(jobs))
            at = search.next_offset(limit)
    """

    __slots__ = (
        "above",
        "below",
        "first",
        "key",
        "misses",
        "newest_first",
        "origin",
        "unit",
    )

    def __init__(
        self,
        key: datetime,
        *,
        origin: int,
        first: int,
        newest_first: bool | None,
        unit: int,
    ) -> None:
        self.key = key
        self.unit = unit
        self.origin = origin
        self.first = first
        self.newest_first = newest_first
        self.below: int | None = None  # a read position before the records
        self.above: int | None = None  # a read position past them
        self.misses = 0  # reads in a row that held none of them

    def side(self, jobs: tuple[BatchJob, ...]) -> int:
        """Which side of the records sought *jobs* lies on (see `side_of`)."""
        return side_of(jobs, self.key, self.newest_first)

    def missed(self, at: int, jobs: tuple[BatchJob, ...], side: int) -> None:
        """Note that the read of *jobs* from *at*, on *side*, held none of them."""
        self.misses += 1
        if side > 0:
            self.below = at + len(jobs) - 1
        elif side < 0 or not jobs:
            self.above = at
        below, above = self.below, self.above
        if below is not None and above is not None and above <= below + 1:
            # the hints contradict each other: records moved meanwhile
            self.below = self.above = None

    def found(self, at: int) -> None:
        """Note that the read from *at* held some of them: start afresh there."""
        self.below = self.above = None
        self.misses = 0
        self.origin = at

    def next_offset(self, limit: int) -> int:
        """Where the next read of *limit* records begins."""
        step = self.unit << max(self.misses - 1, 0)  # twice as far each miss
        below, above = self.below, self.above
        if below is not None and above is not None:
            at = max(below, (below + above - limit + 1) // 2)
        elif below is not None:
            at = below + step
        elif above is not None:
            at = above - step
        else:  # no hint: look both ways in turn
            at = self.origin + (step if self.misses % 2 == 0 else -step)
        return max(self.first, at)
