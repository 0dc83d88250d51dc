"""
Seeded, realistic batch jobs: the same project and seed give the same jobs.

Jobs are kept as wire dicts (what the API sends), oldest first, so both sort
orders and the job type filter are slices and index lists, not sorts per request.
"""

from __future__ import annotations

import random
import uuid
import zlib
from typing import Any, Final

import attrs

from ief_jobs.models import JobStatus, JobType

_JOB_TYPES: Final = tuple(t.value for t in JobType)
_STATUSES: Final = tuple(s.value for s in JobStatus)
# Most jobs in a real project are long finished; a few run, wait or are paused.
_STATUS_WEIGHTS: Final = (8, 50, 8, 10, 3, 6, 5, 4)
_NAME_WORDS: Final = (
    "edge",
    "camera",
    "gateway",
    "factory",
    "sensor",
    "upgrade",
    "rollout",
    "canary",
    "nightly",
    "line",
    "store",
    "plant",
)
_DESCRIPTIONS: Final = ("", "", "", "scheduled maintenance", "hotfix", "canary batch")
EPOCH_START: Final = 1_640_995_200  # 2022-01-01T00:00:00Z
_SPREAD: Final = 300 * 86_400  # creation times spread over about ten months


def project_seed(project_id: str, seed: int) -> int:
    """One stable integer per (project, seed), independent of PYTHONHASHSEED."""
    return zlib.crc32(project_id.encode()) ^ (seed * 0x9E3779B1)


def task_counts(rng: random.Random, status: str) -> tuple[int, int, int]:
    """Task (total, success, failed) that agree with *status*."""
    total = rng.randint(1, 50)
    if status == JobStatus.SUCCESSFUL:
        return total, total, 0
    if status == JobStatus.PARTIALLY_SUCCESSFUL:
        total = max(total, 2)
        failed = rng.randint(1, total - 1)
        return total, total - failed, failed
    if status == JobStatus.FAILED:
        failed = rng.randint(1, total)
        return total, total - failed, failed
    if status == JobStatus.WAITING:
        return total, 0, 0
    # Running, paused, stopped or timed out: some tasks may still be open
    done = rng.randint(0, total - 1) if status != JobStatus.STOPPED else total
    failed = rng.randint(0, done)
    return total, done - failed, failed


def make_job(
    rng: random.Random,
    created_at: int,
    *,
    status: str | None = None,
    job_type: str | None = None,
) -> dict[str, Any]:
    """One wire record created at *created_at*; status and type drawn if not given."""
    if status is None:
        status = rng.choices(_STATUSES, _STATUS_WEIGHTS)[0]
    if job_type is None:
        job_type = rng.choice(_JOB_TYPES)
    total, success, failed = task_counts(rng, status)
    words = rng.sample(_NAME_WORDS, 2)
    return {
        "job_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "job_name": f"{words[0]}-{words[1]}-{rng.randint(1, 9999):04d}",
        "job_type": job_type,
        "created_at": created_at,
        "status": status,
        "task_total_count": total,
        "task_success_count": success,
        "task_failed_count": failed,
        "status_last_updated_at": created_at + rng.randint(0, 86_400),
        "description": rng.choice(_DESCRIPTIONS),
    }


def generate_jobs(
    project_id: str, count: int, *, seed: int = 0
) -> list[dict[str, Any]]:
    """
    *count* wire records for *project_id*, oldest first, deterministic per seed.

    Creation times are distinct and spread over months; every job type and status
    appears in a project of a few dozen jobs or more.
    """
    rng = random.Random(project_seed(project_id, seed))
    step = max(_SPREAD // max(count, 1), 1)
    created = EPOCH_START
    jobs = []
    for index in range(count):
        # distinct, increasing times: both sort orders are then well defined
        created += rng.randint(1, 2 * step)
        # the first few cover every status and type, so small projects show all
        status = _STATUSES[index] if index < len(_STATUSES) else None
        job_type = _JOB_TYPES[index] if index < len(_JOB_TYPES) else None
        jobs.append(make_job(rng, created, status=status, job_type=job_type))
    return jobs


@attrs.frozen
class RunPlan:
    """
    How one waiting or running job will go on: when it runs, how it ends.

    Tasks finish evenly between *start* and *end*, from the counts the job had
    when planned up to *final*; then the job takes *final_status*.
    """

    start: float
    end: float
    base: tuple[int, int]  # (success, failed) when planned
    final: tuple[int, int]  # (success, failed) at the end
    final_status: str

    def apply(self, job: dict[str, Any], now: float) -> bool:
        """Bring *job* to its state at *now*; True once it reached its end."""
        if now < self.start:
            return False
        if now >= self.end:
            status, (success, failed) = self.final_status, self.final
            moved_at = self.end
        else:
            fraction = (now - self.start) / (self.end - self.start)
            success, failed = (
                base + int((final - base) * fraction)
                for base, final in zip(self.base, self.final, strict=True)
            )
            status, moved_at = JobStatus.RUNNING.value, self.start
        if job["status"] != status:
            job["status"] = status
            job["status_last_updated_at"] = max(int(moved_at), job["created_at"])
        job["task_success_count"], job["task_failed_count"] = success, failed
        return now >= self.end


def plan_run(rng: random.Random, job: dict[str, Any], now: float) -> RunPlan | None:
    """
    A plan for a job that is not final yet (None for one that is): a waiting
    one starts within two minutes, a paused one is resumed within five.
    """
    status = job["status"]
    if status == JobStatus.RUNNING:
        start = now
    elif status == JobStatus.WAITING:
        start = now + rng.uniform(5, 120)
    elif status == JobStatus.STOPPING:  # paused, until someone resumes it
        start = now + rng.uniform(30, 300)
    else:
        return None
    total = job["task_total_count"]
    base = (job["task_success_count"], job["task_failed_count"])
    remaining = total - sum(base)
    if remaining > 0 and rng.random() < 0.1:  # noqa: PLR2004 (one in ten times out)
        left_open = rng.randint(1, remaining)
        extra_failed = rng.randint(0, remaining - left_open)
        final = (
            base[0] + remaining - left_open - extra_failed,
            base[1] + extra_failed,
        )
        final_status = JobStatus.TIMED_OUT.value
    else:
        # most tasks succeed; the counts then decide the status, as IEF's do
        extra_failed = rng.choice((0, 0, 0, 0, rng.randint(0, remaining)))
        final = (base[0] + remaining - extra_failed, base[1] + extra_failed)
        if final[1] == 0:
            final_status = JobStatus.SUCCESSFUL.value
        elif final[0] == 0:
            final_status = JobStatus.FAILED.value
        else:
            final_status = JobStatus.PARTIALLY_SUCCESSFUL.value
    return RunPlan(start, start + rng.uniform(30, 600), base, final, final_status)
