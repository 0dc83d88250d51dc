"""
The boundary check: which records of a read are new, given what was yielded.

A later read starts one record early, at the last record yielded. When it
starts with that record and the record after it does not share its
``created_at``, every job that existed between the two reads is in one of the
two reads, and the rest of the read is new: the fast path, no record looked
at one by one. Otherwise jobs came or went (or jobs of equal ``created_at``
swapped places), and the read's records are told apart by ``job_id``.

`Boundary` holds no I/O: the walk's cursor uses it for every later read, and
the watch can use it for its head reads (see `Boundary.check`).
"""

from __future__ import annotations

import math
import operator
from collections import deque
from datetime import datetime
from typing import Final, TypeAlias

from ief_jobs.models import BatchJob

__all__ = ["Boundary", "Fresh", "read_stride", "reads_down_to"]

_job_id: Final = operator.attrgetter("job_id")  # a loop in C, not in Python

Fresh: TypeAlias = range | list[int]
"""
The indexes of a read's records not yielded yet: a ``range`` when the read
lined up with the boundary (a slice, the fast path), else a list of indexes.
"""


def read_stride(asked: int) -> int:
    """
    New records a read of *asked* records brings when it starts at the
    boundary, one record early: all but that one (a read of one record cannot
    start early, so it brings one).
    """
    return asked - 1 if asked > 1 else asked


def reads_down_to(records: int, asked: int) -> int:
    """
    Reads of *asked* records each that cover the first *records* of a listing,
    every read after the first starting at the boundary (see `read_stride`).

    Example::

        assert 3 == reads_down_to(25, 10)  # 0-9, 9-18, 18-27
    """
    if records <= asked:
        return 1
    return 1 + math.ceil((records - asked) / read_stride(asked))


class Boundary:
    """
    The records a walk yielded last, to tell the next read's new ones from them.

    *last* is the record the next read must start with. While
    *nothing_yielded_after_last*, no job yielded sorts after it, so a read that
    starts with it holds only new jobs after it.

    Example (the watch's head reads, newest first, each from the record
    before)::

        boundary = Boundary(keep=4 * page_size)
        boundary.yielded(first.jobs)
        boundary.last = first.jobs[-1]
        # no peek: the second read (from offset len - 1) shows what follows
        boundary.note_past(first.jobs, past=second.jobs[1])
        fresh = boundary.check(second.jobs)
        if fresh is None or boundary.last_index is None:
            ...  # records moved past the boundary: re-read or re-list
        elif boundary.split_tie is not None:
            ...  # jobs of one created_at straddle it: they may have swapped

    (`ief_jobs.watch` does this, with the cases the example leaves out.)
    """

    __slots__ = (
        "_keep",
        "_known_ids",
        "_recent",
        "_recent_records",
        "checking_ids",
        "last",
        "last_index",
        "nothing_yielded_after_last",
        "split_tie",
        "tie_may_continue",
    )

    def __init__(self, keep: int) -> None:
        self._keep = keep  # records of recent pages kept to tell duplicates by
        self.last: BatchJob | None = None
        self.nothing_yielded_after_last = True
        self.last_index: int | None = None  # where the last read held *last*
        self.split_tie: datetime | None = None  # a created_at the boundary split
        # the record past *last*, when last read, shares its created_at (or was
        # not seen): the boundary may split jobs of equal created_at
        self.tie_may_continue = False
        self._recent: deque[tuple[BatchJob, ...]] = deque()
        self._recent_records = 0
        self._known_ids: set[str] | None = None  # built when a read misaligns
        # Once a read did not line up, every id yielded from then on is kept:
        # records may come back from anywhere, and each is checked by its id.
        self.checking_ids = False

    def yielded(self, jobs: tuple[BatchJob, ...]) -> None:
        """Hold *jobs*, just yielded, and forget the oldest beyond what is kept."""
        self._recent.append(jobs)
        self._recent_records += len(jobs)
        while self._recent_records - len(self._recent[0]) >= self._keep:
            self._recent_records -= len(self._recent.popleft())
        if self.checking_ids and self._known_ids is not None:
            self._known_ids.update(map(_job_id, jobs))
        else:
            self._known_ids = None

    def note_past(self, jobs: tuple[BatchJob, ...], past: BatchJob | None) -> None:
        """
        Note whether the boundary after *jobs* (just read) may split a tie:
        *past*, the record read after them, shares the last one's created_at,
        or was not read (a page cut short, a cap met late): then only the next
        read can tell.
        """
        self.tie_may_continue = past is None or past.created_at == jobs[-1].created_at

    def lines_up(self, jobs: tuple[BatchJob, ...]) -> bool:
        """
        Whether *jobs* starts with the last record and nothing can hide behind
        it: the read brings only new records after its first.
        """
        last = self.last
        return (
            self.nothing_yielded_after_last
            and not self.checking_ids
            and last is not None
            and bool(jobs)
            and jobs[0].job_id == last.job_id
            # a tie at the boundary may have swapped places: look closer
            and not self.tie_may_continue
            and (len(jobs) == 1 or jobs[1].created_at != last.created_at)
        )

    def check(self, jobs: tuple[BatchJob, ...]) -> Fresh | None:
        """
        The indexes of *jobs* not yielded yet, or None if *jobs* shares no
        record with what was yielded lately (records moved past the boundary).

        Also notes where *jobs* held the last record (`last_index`), whether a
        tie may hide behind the boundary (`split_tie`), and makes the last of
        *jobs* the record the next read must start with.
        """
        if self.lines_up(jobs):
            self.last_index, self.split_tie = 0, None
            self.last = jobs[-1]
            return range(1, len(jobs))
        ids = self.known_ids()
        self.checking_ids = True
        found = [i for i, job in enumerate(jobs) if job.job_id in ids]
        if not found:
            return None
        # before the first known record only its ties can be new and not
        # created meanwhile: jobs with equal created_at may swap places
        tie = jobs[found[0]].created_at
        fresh = [
            i
            for i, job in enumerate(jobs)
            if job.job_id not in ids and (i > found[0] or job.created_at == tie)
        ]
        self._note_last(jobs, found)
        self.split_tie = self._tie_split(jobs)
        self.last = jobs[-1]
        return fresh

    def _note_last(self, jobs: tuple[BatchJob, ...], found: list[int]) -> None:
        """
        Where *jobs* holds the last record, and whether nothing yielded sorts
        after it now: only if it is here with new records after it and nothing
        yielded. If it is gone, what is new here may sort before jobs yielded
        already (a server whose order puts new jobs among old ones), so the
        next read is checked record by record too.
        """
        last = self.last
        self.last_index = None
        if last is not None:
            self.last_index = next(
                (i for i in found if jobs[i].job_id == last.job_id), None
            )
        index = self.last_index
        self.nothing_yielded_after_last = index is not None and (
            index == found[-1]
            and (self.nothing_yielded_after_last or index < len(jobs) - 1)
        )

    def _tie_split(self, jobs: tuple[BatchJob, ...]) -> datetime | None:
        """
        The last record's created_at, if jobs sharing it lie on both sides of
        the boundary and may have swapped places between the reads (unless
        this read holds all of them, a record on each side).
        """
        if self.last is None:
            return None
        key = self.last.created_at
        ties = [i for i, job in enumerate(jobs) if job.created_at == key]
        whole = bool(ties) and ties[0] > 0 and ties[-1] < len(jobs) - 1
        if not whole and (self.tie_may_continue or len(ties) > 1):
            return key
        return None

    def count_yielded_at(self, key: datetime) -> int:
        """How many of the jobs yielded lately share *key* as created_at."""
        return sum(job.created_at == key for page in self._recent for job in page)

    def known_ids(self) -> set[str]:
        """The ids of the jobs yielded lately (or since ids are checked)."""
        if self._known_ids is None:
            self._known_ids = {job.job_id for page in self._recent for job in page}
        return self._known_ids

    def knows(self, count: int) -> bool:
        """Whether the last *count* jobs yielded are all still known."""
        return count <= max(self._recent_records, len(self.known_ids()))

    def start_over(self, jobs: tuple[BatchJob, ...]) -> list[int]:
        """The indexes of *jobs* not yielded, for a walk that starts over."""
        ids = self.known_ids()
        self.nothing_yielded_after_last = False
        self.last_index = self.split_tie = None
        self.last = jobs[-1]
        return [i for i, job in enumerate(jobs) if job.job_id not in ids]

    def unseen_at(self, jobs: tuple[BatchJob, ...], key: datetime) -> list[int]:
        """The indexes of *jobs* created at *key* and not yielded yet."""
        ids = self.known_ids()
        return [
            i
            for i, job in enumerate(jobs)
            if job.created_at == key and job.job_id not in ids
        ]
