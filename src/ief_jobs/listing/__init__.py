"""
The page walk for one project, as a function of a ``fetch_page(offset, limit)``
callable: no HTTP here, so tests drive it with a fake server.

What the walk guarantees, whatever jobs are created or deleted while it lists
and however jobs of equal ``created_at`` swap places between reads:

* a job that exists for the whole walk is yielded exactly once, a job created
  or deleted meanwhile at most once, in the order the server sent them;
* it never asks for a page past the end, nor for a ``limit`` over 1,000, and
  costs no extra request when nothing changes;
* where no read can show that nothing was skipped, it raises
  `ListingMovedError` (saying whether resuming can help) rather than return a
  short listing;
* a changed or stale ``job_count`` is reported once per listing
  (`JobCountChanged`, `JobCountStale`).

How: `cursor` holds the decisions (no I/O) and `steps` what it asks for,
`boundary` the check at each page boundary, `search` the one search for
records that moved, `driver` the tasks.
docs/walk.md tells what each check defends against.
"""

from __future__ import annotations

from ief_jobs.errors import ListingMovedError

from .boundary import Boundary, Fresh, read_stride, reads_down_to
from .cursor import LIMIT_MAX, Cursor, JobCountChanged, JobCountStale
from .driver import FetchOf, FetchPage, PageBudget, ReadPage, Unbuilt, walk_pages
from .steps import Collect, Deliver, Drop, Notice, Read, Start, Step

__all__ = [
    "LIMIT_MAX",
    "Boundary",
    "Collect",
    "Cursor",
    "Deliver",
    "Drop",
    "FetchOf",
    "FetchPage",
    "Fresh",
    "JobCountChanged",
    "JobCountStale",
    "ListingMovedError",
    "Notice",
    "PageBudget",
    "Read",
    "ReadPage",
    "Start",
    "Step",
    "Unbuilt",
    "read_stride",
    "reads_down_to",
    "walk_pages",
]
