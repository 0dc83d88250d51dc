"""
A local IEF server for the demo, the tests and the benchmarks.

It serves ``GET /v2/{project_id}/productmgr/jobs`` as the API reference describes
(job type filter, both sort orders, offset/limit, ``job_count``, ``X-Request-Id``,
IEF's error bodies) over seeded, deterministic data, and ShowBatchJob
(``GET /v2/{project_id}/productmgr/jobs/{job_id}``) consistently with it, and
misbehaves on request (`Faults`). As in life, unfinished jobs are recent, bar a
few old stragglers. With ``running=True`` jobs run and new ones arrive on its
clock, and `Emulator.transitions` records every change it made.

It accepts every way IEF authenticates: its fixed token, tokens its own IAM call
(``POST /v3/auth/tokens``) issues to its `IamUser`, scoped to a project and
expiring on its clock, and requests signed with its `AccessKey` (401 APIG.0301
on a bad signature, 401 APIG.0303 when ``X-Sdk-Date`` is more than 15 minutes
off). It imports only `ief_jobs.models` and the signing rules from the library,
never the client.

Example::

    async with Emulator(projects=3, jobs=500) as emulator:
        async with IefClient(emulator.base_url, auth=TokenAuth(emulator.token)) as ief:
            jobs = await ief.list_jobs(emulator.project_ids[0])
            detail = await ief.get_job(emulator.project_ids[0], jobs[0].job_id)
"""

from __future__ import annotations

import hashlib
import random
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Final, Self

from aiohttp import web

from ief_jobs._closing import AsyncClosing
from ief_jobs.models import JobStatus, JobType

from ._app import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    AccessKey,
    EmulatorApp,
    IamUser,
)
from ._data import (
    DEFAULT_STRAGGLERS,
    RECENT,
    ProjectJobs,
    Transition,
    generate_jobs,
    project_seed,
)
from ._faults import Faults, Stats

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_STRAGGLERS",
    "MAX_LIMIT",
    "RECENT",
    "AccessKey",
    "Emulator",
    "Faults",
    "IamUser",
    "Stats",
    "Transition",
    "generate_jobs",
    "project_ids_for",
]


def project_ids_for(count: int, *, seed: int = 0) -> list[str]:
    """*count* project ids shaped like Huawei Cloud's (32 hex digits), per seed."""
    # hashed, so projects differ in their first digits as real ones do
    return [
        hashlib.blake2s(f"{seed}/{index}".encode(), digest_size=16).hexdigest()
        for index in range(count)
    ]


_WORLD: Final = 0x5EED  # the world's dice differ from the data's, per project


class Emulator(AsyncClosing):
    """
    An IEF emulator on ``127.0.0.1``, as an async context manager.

    Args:
        projects: How many projects to make, or their ids.
        jobs: Jobs per project, or a mapping of project id to its number of jobs.
        seed: Seeds the data and the faults' dice.
        token: The ``X-Auth-Token`` it accepts (a random one if not given).
        faults: How to misbehave; change ``emulator.faults`` at any time.
        iam_user: The user its IAM call issues tokens to (a random one if not
            given).
        access_key: The key pair it checks signatures with (a random one if not
            given; with a ``security_token``, ``X-Security-Token`` must match).
        clock: Unix seconds, for token expiry and ``X-Sdk-Date`` (tests pass
            a fake, shared with the client's auth).
        token_ttl: Seconds an issued token lives (IAM's are 24 hours).
        running: Waiting, running and paused jobs advance on *clock*: they
            start, their task counts grow, and they end Successful,
            Partially_successful, Failed or Timed_out, each within minutes.
            Everything moves with *clock* alone, never per request: stop the
            clock and the world stands still. The jobs' times then end just
            before *clock*'s time at construction.
        new_jobs_per_hour: When running, each project gets a new (Waiting)
            job this often, evenly spaced on *clock* (0: none).
        stragglers: Old unfinished jobs per project, deep in its list; the
            other unfinished jobs are among its newest `RECENT`.
        host: Loopback only: tests and the demo never listen elsewhere.
        port: 0 picks a free port.
    """

    __slots__ = ("_app", "_port", "_runner", "host", "port_wanted")

    def __init__(
        self,
        *,
        projects: int | Sequence[str] = 3,
        jobs: int | Mapping[str, int] = 250,
        seed: int = 0,
        token: str | None = None,
        faults: Faults | None = None,
        iam_user: IamUser | None = None,
        access_key: AccessKey | None = None,
        clock: Callable[[], float] = time.time,
        token_ttl: float = 24 * 3600.0,
        running: bool = False,
        new_jobs_per_hour: float = 0.0,
        stragglers: int = DEFAULT_STRAGGLERS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not new_jobs_per_hour >= 0:
            msg = f"new_jobs_per_hour must be 0 or more, not {new_jobs_per_hour!r}"
            raise ValueError(msg)
        ids = (
            project_ids_for(projects, seed=seed)
            if isinstance(projects, int)
            else list(projects)
        )
        counts = jobs if isinstance(jobs, Mapping) else dict.fromkeys(ids, jobs)
        # running jobs are recent: the data then ends at the clock's time
        end = int(clock()) if running else None
        log: list[Transition] = []
        data = {
            pid: ProjectJobs(
                pid,
                generate_jobs(
                    pid, counts.get(pid, 0), seed=seed, stragglers=stragglers, end=end
                ),
                log=log,
                rng=random.Random(project_seed(pid, seed) ^ _WORLD),
            )
            for pid in ids
        }
        self._app = EmulatorApp(
            data,
            token=token if token is not None else secrets.token_urlsafe(24),
            faults=faults if faults is not None else Faults(),
            seed=seed,
            iam_user=iam_user
            or IamUser("ief-operator", secrets.token_urlsafe(16), "emulated-account"),
            access_key=access_key
            or AccessKey(secrets.token_hex(10).upper(), secrets.token_urlsafe(30)),
            clock=clock,
            token_ttl=token_ttl,
            running=running,
            new_jobs_per_hour=new_jobs_per_hour,
            log=log,
        )
        self.host = host
        self.port_wanted = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def token(self) -> str:
        """The token the emulator accepts as ``X-Auth-Token``."""
        return self._app.token

    @property
    def iam_user(self) -> IamUser:
        """The IAM user it issues tokens to (its IAM endpoint is `base_url`)."""
        return self._app.iam_user

    @property
    def access_key(self) -> AccessKey:
        """The access key pair whose signatures it accepts."""
        return self._app.access_key

    @property
    def project_ids(self) -> list[str]:
        """The projects it serves, in the order they were made."""
        return list(self._app.projects)

    @property
    def faults(self) -> Faults:
        """The knobs in force; change them while it runs."""
        return self._app.faults

    @property
    def stats(self) -> Stats:
        """Counters of what it served."""
        return self._app.stats

    @property
    def base_url(self) -> str:
        """Where it listens, such as ``http://127.0.0.1:41234``."""
        if self._port is None:
            msg = "the emulator is not started"
            raise RuntimeError(msg)
        return f"http://{self.host}:{self._port}"

    def jobs(self, project_id: str) -> list[dict[str, Any]]:
        """
        The project's current jobs as wire records, oldest first (a live view;
        running jobs are brought to the clock's time first).
        """
        project = self._project(project_id)
        self._app.advance([project])
        return project.jobs

    @property
    def transitions(self) -> list[Transition]:
        """
        Every change the emulator made, oldest first: the ground truth a watch's
        events are held to.

        One `Transition` per job created (``old_status=None``), status changed,
        or deleted (``new_status=None``), whether by running jobs, by `Faults`'
        churn or by `create_job`, `set_status` and `delete_job`; *at* is the
        clock time of the change. The seeded jobs were there from the start and
        have none. Reading it brings running jobs to the clock's time first.

        Example::

            emulator.set_status(pid, job_id, JobStatus.FAILED)
            assert emulator.transitions[-1].new_status == JobStatus.FAILED
        """
        self._app.advance()
        # each project's changes are in order; projects are brought up lazily
        return sorted(self._app.log, key=attrgetter("at"))

    def create_job(
        self,
        project_id: str,
        *,
        status: JobStatus | str | None = None,
        job_type: JobType | str | None = None,
    ) -> dict[str, Any]:
        """
        Create a job in *project_id* now, newer than all others; its wire record.

        Without *status* it is Waiting when running (and will run), else one
        drawn from the seeded dice. Recorded in `transitions`.

        Example::

            job = emulator.create_job(pid, status=JobStatus.WAITING)
        """
        project = self._project(project_id)
        now = self._app.advance([project])
        job = project.create(
            project.rng,
            now,
            status=None if status is None else str(status),
            job_type=None if job_type is None else str(job_type),
        )
        return dict(job)

    def delete_job(self, project_id: str, job_id: str) -> dict[str, Any]:
        """
        Delete job *job_id* of *project_id* now; its last wire record.

        Recorded in `transitions`.

        Raises:
            KeyError: No such project or job.
        """
        project = self._project(project_id)
        job = project.delete(self._app.advance([project]), job_id=job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def set_status(
        self, project_id: str, job_id: str, status: JobStatus | str
    ) -> dict[str, Any]:
        """
        Give job *job_id* *status* now; its wire record afterwards.

        Its task counts move as little as needed to agree with *status*
        (Successful: all tasks succeeded; Waiting: none ran; ...); a status the
        API does not document is kept as given. When running, a job set to
        Waiting, Running or paused runs on from there; any other status stops
        it. Recorded in `transitions` (nothing is when the status is the same).

        Example::

            emulator.set_status(pid, job_id, JobStatus.STOPPED)

        Raises:
            KeyError: No such project or job.
        """
        project = self._project(project_id)
        now = self._app.advance([project])
        return dict(project.set_status(job_id, str(status), now))

    def _project(self, project_id: str) -> ProjectJobs:
        try:
            return self._app.projects[project_id]
        except KeyError:
            msg = f"no project {project_id!r} in this emulator"
            raise KeyError(msg) from None

    def info(self) -> dict[str, Any]:
        """
        What a script needs to use it: base URL, project ids, and the (made-up)
        credentials it accepts: token, IAM user, access key pair.
        """
        user, key = self.iam_user, self.access_key
        return {
            "base_url": self.base_url,
            "token": self.token,
            "project_ids": self.project_ids,
            "iam_user": {
                "name": user.name,
                "password": user.password,
                "domain": user.domain,
            },
            "access_key": {
                "access_key": key.access_key,
                "secret_key": key.secret_key,
                "security_token": key.security_token,
            },
        }

    async def start(self) -> None:
        """Start listening; the port is known afterwards."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self._app.build(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner, self.host, self.port_wanted, reuse_address=sys.platform != "win32"
        )
        await site.start()
        server = site._server  # noqa: SLF001 (aiohttp offers no public way to the bound port)
        assert server is not None  # noqa: S101 (started just above)
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._runner = runner

    async def aclose(self) -> None:
        """Stop listening and drop open connections. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self
