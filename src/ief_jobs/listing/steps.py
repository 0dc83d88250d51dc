"""
What a `Cursor` asks of its driver, one step at a time, and what it takes back.

`Start` (send a read; answer whether it was sent), `Collect` (answer with the
read's page), `Deliver` (hand a page on), `Drop` (cancel reads) and `Notice`
(warn and log); the cursor's `advance` returns None at the end.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from ief_jobs.models import JobPage, Progress

__all__ = ["Answer", "Collect", "Deliver", "Drop", "Notice", "Read", "Start", "Step"]


@attrs.define(eq=False)
class Read:
    """One request of the listing: *limit* records from *offset*."""

    offset: int
    limit: int


@attrs.define
class Start:
    """
    Send *read* now; its answer is collected later (`Collect`). Answer True
    once sent. An *optional* read may be refused (answer False): the cursor
    then goes on with the reads it has, and asks again later.
    """

    read: Read
    optional: bool


@attrs.define
class Collect:
    """Answer with *read*'s `JobPage` (sending it first if it was not started)."""

    read: Read


@attrs.define
class Deliver:
    """
    Hand *page* to the consumer; *progress* says how far the listing is (None
    unless the cursor was asked to report it).
    """

    page: JobPage
    progress: Progress | None


@attrs.define
class Drop:
    """Cancel *reads*: their answers are not wanted any more."""

    reads: tuple[Read, ...]


@attrs.define
class Notice:
    """
    Warn once with *category* and *text* (a text that never varies), and log
    *detail* % (project id, *args*) at INFO.
    """

    category: type[Warning]
    text: str
    detail: str
    args: tuple[int, ...]


Step: TypeAlias = Start | Collect | Deliver | Drop | Notice
Answer: TypeAlias = JobPage | bool | None
