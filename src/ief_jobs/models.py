"""
The records IEF lists, and the enums of its wire values.

Nothing here imports from the rest of the package but `_checks`, the leaf
that holds the one contract for arguments.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Final

import attrs

from ._checks import check_int, check_page_size, check_text, validator


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


# Slotted, without a __weakref__ slot: the codec builds each record as a plain
# object of the same layout and then makes it a BatchJob (bench_decode.py), and
# Python allows that only where the layouts match, which a weakref slot spoils
# (on Python 3.11, where it follows the other slots).
# A slotted record is one object the garbage collector tracks, not two (it and
# its __dict__), and ~120 bytes smaller.
@attrs.frozen(weakref_slot=False)
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
    # a Go server writes an empty string as null or leaves it out: a field with a
    # default is the one place the codec tolerates that (its default stands in)
    description: str = ""

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


def _sort_order(value: SortOrder | str | None) -> SortOrder | None:
    if value is None or isinstance(value, SortOrder):
        return value
    if not isinstance(value, str):
        msg = f"sort must be a SortOrder, a str or None, not {type(value).__name__}"
        raise TypeError(msg)
    try:
        return SortOrder(value)
    except ValueError:
        choices = " or ".join(repr(s.value) for s in SortOrder)
        msg = f"sort must be None, {choices}, not {value!r}"
        raise ValueError(msg) from None


@attrs.frozen
class ListQuery:
    """
    One listing's options, checked once where the public method is called
    (`ief_jobs._checks`: *page_size* is 1 to 1,000, IEF's limit).

    The client builds one per call and hands it down unchanged to the walk and
    to each request, so an option is added here and in the public signatures,
    nothing in between. *sort* is the API's exact wire value (a `SortOrder`);
    any other spelling is refused rather than guessed at.

    Example::

        query = ListQuery(job_type=JobType.NODE_UPGRADE, page_size=200)
        assert query.sort is None
    """

    job_type: JobType | str | None = attrs.field(
        default=None, validator=validator(check_text, optional=True)
    )
    sort: SortOrder | None = attrs.field(default=None, converter=_sort_order)
    page_size: int = attrs.field(default=100, validator=validator(check_page_size))
    offset: int = attrs.field(default=0, validator=validator(check_int, minimum=0))
    max_items: int | None = attrs.field(
        default=None, validator=validator(check_int, optional=True, minimum=0)
    )
    instance_id: str | None = attrs.field(
        default=None, validator=validator(check_text, optional=True)
    )


# -- ShowBatchJob: one job with its sub-tasks and targets ---------------------


@attrs.frozen
class ExtensionInfo:
    """One extra fact about a task's or a target's target, as IEF sends it."""

    key: str
    value: str


@attrs.frozen(kw_only=True)
class JobTask:
    """
    One sub-task of a batch job: the job's work on one target. Immutable and
    hashable.

    *status* takes the same values as a job's; one this version does not know
    is kept as a plain ``str``. *reason* says why it failed, in the server's
    words, and is empty when it did not.
    """

    task_id: str
    task_name: str
    status: JobStatus | str
    # Go writes an empty string or slice as null, or leaves it out: empty here
    reason: str = ""
    created_at: datetime  # timezone-aware, UTC
    target_id: str  # the node, node group or deployment it ran on
    extension_info: tuple[ExtensionInfo, ...] = ()


@attrs.frozen(kw_only=True)
class JobTarget:
    """What a batch job was created for: a node, node group or deployment."""

    target_id: str
    extension_info: tuple[ExtensionInfo, ...] = ()


@attrs.frozen(kw_only=True)
class BatchJobDetail:
    """
    One batch job as ShowBatchJob gives it: the listing's ten fields, plus what
    it acts on and each of its sub-tasks. Immutable and hashable.

    *target_type* is ``node``, ``node_group`` or ``deployment``; *task_data* is
    the deployment definition (a JSON document in a string) for deploy and
    upgrade jobs, empty for node upgrades.

    Example::

        detail = await ief.get_job(project_id, job_id)
        failed = [t for t in detail.tasks if t.status == JobStatus.FAILED]
        assert detail.to_job().task_failed_count == len(failed)
    """

    job_id: str
    job_name: str
    job_type: JobType | str
    description: str = ""
    created_at: datetime  # timezone-aware, UTC
    status: JobStatus | str
    task_total_count: int
    task_success_count: int
    task_failed_count: int
    status_last_updated_at: datetime  # timezone-aware, UTC
    target_type: str
    task_data: str = ""
    tasks: tuple[JobTask, ...] = ()
    targets: tuple[JobTarget, ...] = ()

    @property
    def is_final(self) -> bool:
        """Whether the job reached a final status (an unknown status is not final)."""
        return self.status in FINAL_STATUSES

    def to_job(self) -> BatchJob:
        """The job's summary: the `BatchJob` the listing gives for it."""
        return BatchJob(
            job_id=self.job_id,
            job_name=self.job_name,
            job_type=self.job_type,
            created_at=self.created_at,
            status=self.status,
            task_total_count=self.task_total_count,
            task_success_count=self.task_success_count,
            task_failed_count=self.task_failed_count,
            status_last_updated_at=self.status_last_updated_at,
            description=self.description,
        )
