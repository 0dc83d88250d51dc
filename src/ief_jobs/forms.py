"""
A `BatchJob` in the forms it takes besides the record, each conversion once.

* **Stored** (`pack_job`, `unpack_job`): how a watch's checkpoint keeps a job,
  a JSON list of the ten fields in a fixed order, times as Unix seconds, job
  type and status as their wire strings. The order never changes: states
  written by earlier versions must load.
* **Printed** (`job_fields`): how ``ief-jobs list --format jsonl``, ``show
  --format json``, ``watch --format jsonl`` and a sink's stream entries give a
  job: the API's field names and the project, times in ISO 8601.

The wire form is the codec's (`ief_jobs.codec`), and a ShowBatchJob answer's
listing form is `BatchJobDetail.to_job`. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import TypeVar

from .models import BatchJob, JobStatus, JobType

__all__ = ["job_fields", "pack_job", "unpack_job"]

E = TypeVar("E", bound=enum.StrEnum)


def _enum_or_str(kind: type[E], value: str) -> E | str:
    try:
        return kind(value)
    except ValueError:
        return value  # a value this version does not know stays a string


def pack_job(job: BatchJob) -> list[object]:
    """
    *job* as a checkpoint stores it (a list ready for JSON).

    Example::

        assert job == unpack_job(orjson.loads(orjson.dumps(pack_job(job))))
    """
    return [
        job.job_id,
        job.job_name,
        str(job.job_type),
        job.created_at.timestamp(),
        str(job.status),
        job.task_total_count,
        job.task_success_count,
        job.task_failed_count,
        job.status_last_updated_at.timestamp(),
        job.description,
    ]


def unpack_job(fields: list[object]) -> BatchJob:
    """
    The job a checkpoint stored as *fields* (`pack_job`).

    Raises:
        ValueError: Not ten fields, or one of the wrong kind (a damaged record).
    """
    (jid, name, job_type, created, status, total, ok, failed, moved, text) = fields
    return BatchJob(
        job_id=str(jid),
        job_name=str(name),
        job_type=_enum_or_str(JobType, str(job_type)),
        created_at=datetime.fromtimestamp(float(str(created)), UTC),
        status=_enum_or_str(JobStatus, str(status)),
        task_total_count=int(str(total)),
        task_success_count=int(str(ok)),
        task_failed_count=int(str(failed)),
        status_last_updated_at=datetime.fromtimestamp(float(str(moved)), UTC),
        description=str(text),
    )


def job_fields(project_id: str, job: BatchJob) -> dict[str, object]:
    """
    *job* of *project_id* as the CLI's JSON and a sink's entries print it.

    Example::

        line = orjson.dumps(job_fields("p1", job))  # a line of list --format jsonl
    """
    return {
        "project_id": project_id,
        "job_id": job.job_id,
        "job_name": job.job_name,
        "job_type": str(job.job_type),
        "created_at": job.created_at.isoformat(),
        "status": str(job.status),
        "task_total_count": job.task_total_count,
        "task_success_count": job.task_success_count,
        "task_failed_count": job.task_failed_count,
        "status_last_updated_at": job.status_last_updated_at.isoformat(),
        "description": job.description,
    }
