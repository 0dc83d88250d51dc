"""
The records IEF lists, and the enums of its wire values.

Nothing here imports from the rest of the package.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Final

import attrs


class JobType(enum.StrEnum):
    """What a batch job does; values are the API's wire strings."""

    NODE_UPGRADE = "node_upgrade"
    DEPLOYMENT_DEPLOY = "deployment_deploy"
    DEPLOYMENT_UPGRADE = "deployment_upgrade"


class JobStatus(enum.StrEnum):
    """Where a batch job stands; values are the API's wire strings."""

    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    PARTIALLY_SUCCESSFUL = "Partially_successful"
    FAILED = "Failed"
    STOPPING = "Stopping"  # the documentation's label for this one means *paused*
    STOPPED = "Stopped"  # terminated
    WAITING = "Waiting"
    TIMED_OUT = "Timed_out"

    @property
    def is_final(self) -> bool:
        """
        Whether a job in this status will not change any more.

        Not documented by IEF; read from the statuses' labels.
        """
        return self in FINAL_STATUSES


FINAL_STATUSES: Final = frozenset(
    {
        JobStatus.SUCCESSFUL,
        JobStatus.PARTIALLY_SUCCESSFUL,
        JobStatus.FAILED,
        JobStatus.STOPPED,
        JobStatus.TIMED_OUT,
    }
)


class SortOrder(enum.StrEnum):
    """The order IEF lists jobs in (``sort=``)."""

    CREATED_AT_DESC = "created_at:desc"  # newest first: the server's default
    CREATED_AT_ASC = "created_at:asc"


# slots=False: a frozen dict class sets its fields a third faster than a slotted
# one, and building records is most of the decoding cost (bench_decode.py).
@attrs.frozen(slots=False)
class BatchJob:
    """
    One batch job as IEF lists it. Immutable and hashable.

    Field names are the API's. A job type or status the server sends that this
    version does not know is kept as a plain ``str``, never rejected.
    """

    job_id: str
    job_name: str
    job_type: JobType | str
    created_at: datetime  # timezone-aware, UTC
    status: JobStatus | str
    task_total_count: int
    task_success_count: int
    task_failed_count: int
    status_last_updated_at: datetime  # timezone-aware, UTC
    description: str

    @property
    def is_final(self) -> bool:
        """Whether the job reached a final status (an unknown status is not final)."""
        return self.status in FINAL_STATUSES


@attrs.frozen
class JobPage:
    """
    One page of a listing: where it starts, what IEF said the total was, its jobs.

    Resume a listing from *next_offset*: the server may return fewer records than
    asked for, so the next page starts at ``offset + len(jobs)``, not at
    ``offset + limit``.
    """

    project_id: str
    offset: int
    job_count: int  # all records matching the query, read from this page
    jobs: tuple[BatchJob, ...]
    request_id: str | None = None

    @property
    def next_offset(self) -> int:
        """The offset of the record after this page's last one."""
        return self.offset + len(self.jobs)


@attrs.frozen
class Progress:
    """
    How far one project's listing has come, reported after each page.

    *job_count* is the total as the latest page told it (it may change while
    jobs are created or deleted); *delivered* counts records handed on so far.
    """

    project_id: str
    job_count: int
    delivered: int
    target: int  # records this listing means to deliver (max_items and offset applied)
