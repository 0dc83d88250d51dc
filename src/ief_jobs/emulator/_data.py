"""
Seeded, realistic batch jobs, and the world they live in.

Jobs are kept as wire dicts (what the API sends), oldest first, so both sort
orders and the job type filter are slices and index lists, not sorts per request.
As in a real project, a job ends within hours: the unfinished ones (Waiting,
Running, paused) are among the newest few hundred, plus a few old stragglers;
everything else is final. `ProjectJobs` holds one project's jobs; in running mode
they advance, and new ones arrive, on the emulator's clock alone (never per
request), and every change is recorded as a `Transition`.
"""

from __future__ import annotations

import random
import uuid
import zlib
from bisect import bisect_left
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import Any, Final

import attrs
import orjson

from ief_jobs.models import JobStatus, JobType

_JOB_TYPES: Final = tuple(t.value for t in JobType)
_STATUSES: Final = tuple(s.value for s in JobStatus)
# Among the newest jobs a few run, wait or are paused; most are finished.
_STATUS_WEIGHTS: Final = (8, 50, 8, 10, 3, 6, 5, 4)
# Older jobs are final, with the same proportions between the final statuses.
_FINAL: Final = tuple(s for s in _STATUSES if JobStatus(s).is_final)
_FINAL_WEIGHTS: Final = tuple(
    w for s, w in zip(_STATUSES, _STATUS_WEIGHTS, strict=True) if s in _FINAL
)
_OPEN: Final = tuple(s for s in _STATUSES if s not in _FINAL)
_KNOWN_STATUSES: Final = {s.value: s for s in JobStatus}
# a job in one of these has its open tasks in the same status; others, Waiting
_SHARED_WITH_OPEN_TASKS: Final = frozenset(
    s.value
    for s in (
        JobStatus.RUNNING,
        JobStatus.WAITING,
        JobStatus.STOPPED,
        JobStatus.TIMED_OUT,
    )
)
# how long after its creation a job's status last moved, at most, by status
_SETTLED: Final = {
    JobStatus.WAITING.value: 0,
    JobStatus.RUNNING.value: 600,
    JobStatus.STOPPING.value: 600,
}
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
_REASONS: Final = (
    "node offline",
    "image pull failed",
    "insufficient disk space on the node",
    "the edge agent did not answer in time",
    "version not supported by the node",
)
EPOCH_START: Final = 1_640_995_200  # 2022-01-01T00:00:00Z
_SPREAD: Final = 300 * 86_400  # creation times spread over about ten months
RECENT: Final = 200  # unfinished jobs are among this many newest, stragglers aside
DEFAULT_STRAGGLERS: Final = 2  # old unfinished jobs per project


def _aware(when: datetime | float) -> datetime:
    # the clock gives Unix seconds; a Transition holds what every record does
    if isinstance(when, datetime):
        return when
    return datetime.fromtimestamp(when, UTC)


@attrs.frozen
class Transition:
    """
    One change the emulator made to a job: the ground truth a watch is held to.

    *old_status* is None for a creation, *new_status* None for a deletion; *at*
    is the emulator's clock time of the change as an aware UTC `datetime`, like
    every other time ief-jobs gives (for a job that ran between two reads of
    the clock, the time it started or ended, not the time of the read).
    """

    project_id: str
    job_id: str
    old_status: JobStatus | str | None
    new_status: JobStatus | str | None
    at: datetime = attrs.field(converter=_aware)


def _status(value: str | None) -> JobStatus | str | None:
    return None if value is None else _KNOWN_STATUSES.get(value, value)


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


def agreeing_counts(
    status: str, total: int, success: int, failed: int
) -> tuple[int, int, int]:
    """
    Task (total, success, failed) moved as little as possible to agree with
    *status*, by the rules `task_counts` draws from.
    """
    if status == JobStatus.SUCCESSFUL:
        return total, total, 0
    if status == JobStatus.WAITING:
        return total, 0, 0
    if status == JobStatus.PARTIALLY_SUCCESSFUL:
        total = max(total, 2)
        failed = min(max(failed, 1), total - 1)
        return total, total - failed, failed
    if status == JobStatus.FAILED:
        failed = max(failed, 1)
        return total, total - failed, failed
    if status == JobStatus.STOPPED:
        return total, total - failed, failed
    return total, success, failed  # still open, or a status we do not know


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
        # a waiting job has not moved since it was made; a final one within a day
        "status_last_updated_at": created_at
        + rng.randint(0, _SETTLED.get(status, 86_400)),
        "description": rng.choice(_DESCRIPTIONS),
    }


def generate_jobs(
    project_id: str,
    count: int,
    *,
    seed: int = 0,
    stragglers: int = DEFAULT_STRAGGLERS,
    end: int | None = None,
) -> list[dict[str, Any]]:
    """
    *count* wire records for *project_id*, oldest first, deterministic per seed.

    Creation times are distinct and spread over months. As in life, unfinished
    jobs (Waiting, Running, paused) are recent: they are among the newest
    `RECENT`, apart from *stragglers* old ones deep in the list; all other jobs
    are final. A project of a few dozen jobs or more has every job type and
    status, the newest three being unfinished. With *end* (Unix seconds) the
    newest job was made just before it, and no status moved after it;
    otherwise the jobs start at 2022-01-01.
    """
    rng = random.Random(project_seed(project_id, seed))
    step = max(_SPREAD // max(count, 1), 1)
    created = EPOCH_START
    first_recent = max(count - RECENT, 0)
    # the oldest jobs cover the final statuses, so old stragglers come after them
    old = range(min(len(_FINAL), first_recent), first_recent)
    straggling = set(rng.sample(old, min(max(stragglers, 0), len(old))))
    newest_open = count - len(_OPEN)
    jobs = []
    for index in range(count):
        # distinct, increasing times: both sort orders are then well defined
        created += rng.randint(1, 2 * step)
        # the first few cover every status and type, so small projects show all
        if index < len(_FINAL):
            status: str | None = _FINAL[index]
        elif index >= newest_open:
            status = _OPEN[index - newest_open]
        elif index >= first_recent:
            status = None  # drawn among all statuses
        elif index in straggling:
            status = rng.choice(_OPEN)
        else:
            status = rng.choices(_FINAL, _FINAL_WEIGHTS)[0]
        job_type = _JOB_TYPES[index] if index < len(_JOB_TYPES) else None
        jobs.append(make_job(rng, created, status=status, job_type=job_type))
    if end is not None and jobs:
        _end_at(jobs, end)
    return jobs


def _end_at(jobs: list[dict[str, Any]], end: int) -> None:
    # move every time so the newest job was made a minute before *end*
    shift = end - 60 - jobs[-1]["created_at"]
    for job in jobs:
        created = job["created_at"] + shift
        job["created_at"] = created
        job["status_last_updated_at"] = max(
            min(job["status_last_updated_at"] + shift, end), created
        )


def job_detail(job: dict[str, Any]) -> dict[str, Any]:
    """
    ShowBatchJob's answer for *job* as it is now: its wire record plus tasks and
    targets, deterministic per job id.

    One task per ``task_total_count``: the first ``task_success_count`` are
    Successful, the next ``task_failed_count`` Failed (with a reason), the rest
    Waiting or Running as the job is (Stopped or Timed_out for a job that ended
    so).
    """
    rng = random.Random(job["job_id"])  # a str seed is hashed by SHA-512: stable
    status = job["status"]
    total = job["task_total_count"]
    success = job["task_success_count"]
    done = success + job["task_failed_count"]
    rest = status if status in _SHARED_WITH_OPEN_TASKS else JobStatus.WAITING.value
    nodes = job["job_type"] == JobType.NODE_UPGRADE
    kind = "node" if nodes else "deployment"
    created = job["created_at"]
    tasks = []
    targets = []
    for index in range(total):
        target_id = f"{kind}-{rng.getrandbits(32):08x}"
        info = (
            [{"key": "version", "value": f"2.{rng.randint(0, 9)}.{rng.randint(0, 9)}"}]
            if nodes
            else [{"key": "replicas", "value": str(rng.randint(1, 5))}]
        )
        if index < success:
            task_status, reason = JobStatus.SUCCESSFUL.value, ""
        elif index < done:
            task_status, reason = JobStatus.FAILED.value, rng.choice(_REASONS)
        else:
            task_status, reason = rest, ""
        tasks.append(
            {
                "task_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "task_name": f"{job['job_name']}-{index + 1}",
                "status": task_status,
                "reason": reason,
                "created_at": created + rng.randint(0, 5),
                "target_id": target_id,
                "extension_info": info,
            }
        )
        targets.append({"target_id": target_id, "extension_info": info})
    task_data = (
        ""
        if nodes
        else orjson.dumps(
            {"name": job["job_name"], "image": f"swr.example/app:{created % 97}"}
        ).decode()
    )
    return {
        **job,
        "target_type": kind,
        "task_data": task_data,
        "tasks": tasks,
        "targets": targets,
    }


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

    def apply(
        self, job: dict[str, Any], now: float, moves: list[tuple[str, str, float]]
    ) -> bool:
        """
        Bring *job* to its state at *now*, adding each status change to *moves*
        as ``(old, new, when)``; True once it reached its end.
        """
        if now < self.start:
            return False
        if job["status"] != JobStatus.RUNNING:  # waiting or paused until now
            _move(job, JobStatus.RUNNING.value, self.start, moves)
        if now >= self.end:
            success, failed = self.final
            _move(job, self.final_status, self.end, moves)
        else:
            fraction = (now - self.start) / (self.end - self.start)
            success, failed = (
                base + int((final - base) * fraction)
                for base, final in zip(self.base, self.final, strict=True)
            )
        job["task_success_count"], job["task_failed_count"] = success, failed
        return now >= self.end


def _move(
    job: dict[str, Any], status: str, at: float, moves: list[tuple[str, str, float]]
) -> None:
    moves.append((job["status"], status, at))
    job["status"] = status
    job["status_last_updated_at"] = max(int(at), job["created_at"])


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


class ProjectJobs:
    """
    One project's jobs, oldest first, with the filtered views cached.

    Every change goes through here and is recorded in *log* as a `Transition`.
    In running mode (`start_running`) unfinished jobs advance and new jobs
    arrive as a function of the clock's time alone: the world read at a given
    time is the same however many requests came before, and a clock that stands
    still gives a still world. Changes for the world itself draw from *rng*
    (seeded per project), the faults' churn from the rng it passes.
    """

    __slots__ = (
        "_advanced_to",
        "_by_id",
        "_by_type",
        "_create_every",
        "_next_arrival",
        "_next_created",
        "jobs",
        "log",
        "plans",
        "project_id",
        "rng",
    )

    def __init__(
        self,
        project_id: str,
        jobs: list[dict[str, Any]],
        *,
        log: list[Transition],
        rng: random.Random,
    ) -> None:
        self.project_id = project_id
        self.jobs = jobs
        self.log = log
        self.rng = rng
        self._by_type: dict[str, list[dict[str, Any]]] = {}
        self._by_id: dict[str, dict[str, Any]] | None = None  # built on first use
        self._next_created = (jobs[-1]["created_at"] + 1) if jobs else 1_700_000_000
        # when running: each job that runs, with its plan, by id
        self.plans: dict[str, tuple[dict[str, Any], RunPlan]] | None = None
        self._advanced_to = float("-inf")
        self._create_every = float("inf")  # seconds between new jobs
        self._next_arrival = float("inf")

    def _plan(self, job: dict[str, Any], now: float) -> None:
        if self.plans is None:
            return
        self.plans.pop(job["job_id"], None)
        plan = plan_run(self.rng, job, now)
        if plan is not None:
            self.plans[job["job_id"]] = (job, plan)

    def _record(self, job_id: str, old: str | None, new: str | None, at: float) -> None:
        self.log.append(
            Transition(self.project_id, job_id, _status(old), _status(new), at)
        )

    def start_running(self, now: float, *, new_jobs_per_hour: float = 0.0) -> None:
        """
        From *now* on, jobs not final yet advance with the clock, and a new job
        arrives every ``3600 / new_jobs_per_hour`` seconds (none for 0).
        """
        self.plans = {}
        self._advanced_to = now
        for job in self.jobs:
            self._plan(job, now)
        if new_jobs_per_hour > 0:
            self._create_every = 3600.0 / new_jobs_per_hour
        self._next_arrival = now + self._create_every

    def advance(self, now: float) -> None:
        """Bring the project to its state at *now* (a no-op unless running)."""
        if self.plans is None or now <= self._advanced_to:
            return
        self._advanced_to = now
        mark = len(self.log)
        while self._next_arrival <= now:
            arrival = self._next_arrival
            self._next_arrival += self._create_every
            self.create(self.rng, arrival, status=JobStatus.WAITING.value)
        for job_id, (job, plan) in list(self.plans.items()):
            moves: list[tuple[str, str, float]] = []
            ended = plan.apply(job, now, moves)
            for old, new, at in moves:
                self._record(job_id, old, new, at)
            if ended:
                del self.plans[job_id]
        # in order of time: arrivals and plans interleave within one step
        self.log[mark:] = sorted(self.log[mark:], key=attrgetter("at"))

    def matching(self, job_type: str | None) -> list[dict[str, Any]]:
        """The jobs of *job_type* (all of them for None), oldest first."""
        if job_type is None:
            return self.jobs
        if job_type not in self._by_type:
            self._by_type[job_type] = [
                j for j in self.jobs if j["job_type"] == job_type
            ]
        return self._by_type[job_type]

    def find(self, job_id: str) -> dict[str, Any] | None:
        """The job with this id, or None."""
        if self._by_id is None:
            self._by_id = {job["job_id"]: job for job in self.jobs}
        return self._by_id.get(job_id)

    def create(
        self,
        rng: random.Random,
        now: float,
        *,
        status: str | None = None,
        job_type: str | None = None,
    ) -> dict[str, Any]:
        """
        Add a new job at *now*, newer than every other: Waiting when running
        and no *status* is given (it will then run), else drawn from *rng*.
        """
        if status is None and self.plans is not None:
            status = JobStatus.WAITING.value
        created = max(self._next_created, int(now))
        job = make_job(rng, created, status=status, job_type=job_type)
        job["status_last_updated_at"] = created
        self._next_created = created + 1
        self.jobs.append(job)
        self._by_type.clear()
        if self._by_id is not None:
            self._by_id[job["job_id"]] = job
        self._record(job["job_id"], None, job["status"], now)
        self._plan(job, now)
        return job

    def delete(
        self, now: float, *, rng: random.Random | None = None, job_id: str | None = None
    ) -> dict[str, Any] | None:
        """Remove the job *job_id*, or one drawn by *rng*; None if there is none."""
        if job_id is not None:
            job = self.find(job_id)
            if job is None:
                return None
            # oldest first with distinct times: found by its creation time
            index = bisect_left(
                self.jobs, job["created_at"], key=itemgetter("created_at")
            )
        elif rng is not None and self.jobs:
            index = rng.randrange(len(self.jobs))
        else:
            return None
        job = self.jobs.pop(index)
        self._by_type.clear()
        if self._by_id is not None:
            del self._by_id[job["job_id"]]
        if self.plans:
            self.plans.pop(job["job_id"], None)
        self._record(job["job_id"], job["status"], None, now)
        return job

    def set_status(self, job_id: str, status: str, now: float) -> dict[str, Any]:
        """
        Give job *job_id* *status* at *now*, its task counts moved to agree;
        when running, a job set to an unfinished status runs from there.

        Raises:
            KeyError: No such job.
        """
        job = self.find(job_id)
        if job is None:
            raise KeyError(job_id)
        old = job["status"]
        total, success, failed = agreeing_counts(
            status,
            job["task_total_count"],
            job["task_success_count"],
            job["task_failed_count"],
        )
        job["task_total_count"] = total
        job["task_success_count"], job["task_failed_count"] = success, failed
        if old != status:
            job["status"] = status
            job["status_last_updated_at"] = max(int(now), job["created_at"])
            self._record(job_id, old, status, now)
        self._plan(job, now)
        return job
