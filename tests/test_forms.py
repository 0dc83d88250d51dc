"""forms: a BatchJob's stored and printed forms, each written once."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
from aioresponses import aioresponses
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from _support import ENDPOINT, PROJECT, TOKEN, page_body
from ief_jobs import BatchJob, JobStatus, JobType
from ief_jobs.cli import main
from ief_jobs.codec import decode_page
from ief_jobs.forms import job_fields, pack_job, unpack_job

_SECONDS = st.integers(0, 4_102_444_800)  # 1970 to 2100, as IEF sends them
_TEXT = st.text(max_size=20)


def _kind(enum: type[JobType | JobStatus]) -> st.SearchStrategy[Any]:
    # a value this version does not know is kept as a string
    return st.one_of(st.sampled_from(enum), _TEXT)


_TIMES = st.one_of(
    _SECONDS.map(lambda s: datetime.fromtimestamp(s, UTC)),
    st.datetimes(
        min_value=datetime(1970, 1, 2),  # noqa: DTZ001 (made aware below)
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
)
_JOBS = st.builds(
    BatchJob,
    job_id=_TEXT,
    job_name=_TEXT,
    job_type=_kind(JobType),
    created_at=_TIMES,
    status=_kind(JobStatus),
    task_total_count=st.integers(0, 2**31),
    task_success_count=st.integers(0, 2**31),
    task_failed_count=st.integers(0, 2**31),
    status_last_updated_at=_TIMES,
    description=_TEXT,
)


class TestStored:
    @given(job=_JOBS)
    def test_stored_job_stored_is_identity(self, job: BatchJob) -> None:
        """A stored record read back and stored again is the same bytes."""
        stored = orjson.dumps(pack_job(job))

        assert stored == orjson.dumps(pack_job(unpack_job(orjson.loads(stored))))

    @given(job=_JOBS)
    def test_job_stored_job_is_identity(self, job: BatchJob) -> None:
        """A job stored and read back is the job, microseconds and all."""
        assert job == unpack_job(orjson.loads(orjson.dumps(pack_job(job))))

    def test_the_layout_of_earlier_states_loads(self) -> None:
        """The stored order is fixed: a record written before still loads."""
        stored = ["j1", "n", "node_upgrade", 1.5, "Running", 3, 1, 0, 2.0, "d"]

        job = unpack_job(stored)

        assert JobType.NODE_UPGRADE == job.job_type
        assert datetime.fromtimestamp(1.5, UTC) == job.created_at
        assert stored == pack_job(job)


def _wire(job: dict[str, Any]) -> dict[str, Any]:
    return {**job, "job_type": str(job["job_type"]), "status": str(job["status"])}


_WIRE_JOBS = st.lists(
    st.fixed_dictionaries(
        {
            "job_id": st.text(min_size=1, max_size=12),
            "job_name": _TEXT,
            "job_type": _kind(JobType),
            "created_at": _SECONDS,
            "status": _kind(JobStatus),
            "task_total_count": st.integers(0, 1000),
            "task_success_count": st.integers(0, 1000),
            "task_failed_count": st.integers(0, 1000),
            "status_last_updated_at": _SECONDS,
            "description": _TEXT,
        }
    ).map(_wire),
    max_size=5,
    unique_by=lambda job: job["job_id"],
)


class TestPrinted:
    @given(wire=_WIRE_JOBS)
    def test_the_printed_form_is_the_clis_json(
        self, wire: list[dict[str, Any]]
    ) -> None:
        """``ief-jobs list --format jsonl`` prints each job as job_fields gives
        it, and the printed times are the server's, to the second."""
        body = page_body(len(wire), wire)
        jobs = decode_page(body, project_id=PROJECT, offset=0).jobs
        env = {"IEF_ENDPOINT": ENDPOINT, "IEF_TOKEN": TOKEN}
        env |= {"HUAWEICLOUD_SDK_AK": None, "HUAWEICLOUD_SDK_SK": None}
        with aioresponses() as mocked:
            mocked.get(re.compile(r".*/productmgr/jobs\?.*"), body=body, repeat=True)
            result = CliRunner().invoke(
                main, ["list", "--format", "jsonl", PROJECT], env=env
            )

        assert 0 == result.exit_code, result.output
        # split on newlines only: a description may hold U+2028 or NEL
        printed = [orjson.loads(line) for line in result.stdout_bytes.split(b"\n")[:-1]]
        assert [job_fields(PROJECT, job) for job in jobs] == printed
        for line, record in zip(printed, wire, strict=True):
            for name in ("created_at", "status_last_updated_at"):
                moment = datetime.fromisoformat(line[name])
                assert record[name] == moment.timestamp()
