"""The page walk's former home: the names it gave, now in `ief_jobs.listing`."""

from __future__ import annotations

from .listing import (
    FetchPage,
    JobCountChanged,
    JobCountStale,
    ListingMovedError,
    walk_pages,
)

__all__ = [
    "FetchPage",
    "JobCountChanged",
    "JobCountStale",
    "ListingMovedError",
    "walk_pages",
]
