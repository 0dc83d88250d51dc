"""ShowBatchJob: decoding one job with its tasks, and IefClient.get_job."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime
from typing import Any

import attrs
import orjson
import pytest
from aioresponses import aioresponses
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from _decoders import _decoder  # noqa: F401 (autouse: every test, both paths)
from _support import ENDPOINT, PROJECT, TOKEN
from ief_jobs import (
    AuthenticationError,
    BatchJob,
    BatchJobDetail,
    DecodeError,
    ExtensionInfo,
    IefClient,
    JobStatus,
    JobTarget,
    JobTask,
    JobType,
    NotFoundError,
    TokenAuth,
    TransportError,
)
from ief_jobs.codec import decode_job_detail, decode_page
from ief_jobs.emulator import generate_jobs
from ief_jobs.emulator._data import job_detail

JOB_ID = "66273c66-f72e-4607-8769-3663d255fb83"
# the shape of api/show-batch-job.md's example
EXAMPLE: dict[str, Any] = {
    "job_id": JOB_ID,
    "job_name": "upgrade-line-7",
    "job_type": "node_upgrade",
    "description": "",
    "created_at": 1667218308,
    "status": "Partially_successful",
    "task_total_count": 2,
    "task_success_count": 1,
    "task_failed_count": 1,
    "status_last_updated_at": 1667218329,
    "target_type": "node",
    "task_data": "",
    "tasks": [
        {
            "task_id": "t-1",
            "task_name": "edge-node-a",
            "status": "Successful",
            "reason": "",
            "created_at": 1667218309,
            "target_id": "node-a",
            "extension_info": [],
        },
        {
            "task_id": "t-2",
            "task_name": "edge-node-b",
            "status": "Failed",
            "reason": "node offline",
            "created_at": 1667218309,
            "target_id": "node-b",
            "extension_info": [{"key": "version", "value": "2.8.0"}],
        },
    ],
    "targets": [
        {"target_id": "node-a", "extension_info": []},
        {
            "target_id": "node-b",
            "extension_info": [{"key": "version", "value": "2.8.0"}],
        },
    ],
}


def _decode(body: dict[str, Any] | bytes) -> BatchJobDetail:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return decode_job_detail(raw, project_id="p1", job_id=JOB_ID, request_id="r-1")


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _show_url(job_id: str = JOB_ID, project_id: str = PROJECT) -> URL:
    return URL(f"{ENDPOINT}/v2/{project_id}/productmgr/jobs/{job_id}")


class TestDecode:
    def test_the_documented_example_decodes_exactly(self) -> None:
        """Every field of the example, nested ones too, arrives typed."""
        info = (ExtensionInfo("version", "2.8.0"),)

        assert BatchJobDetail(
            job_id=JOB_ID,
            job_name="upgrade-line-7",
            job_type=JobType.NODE_UPGRADE,
            description="",
            created_at=_at(1667218308),
            status=JobStatus.PARTIALLY_SUCCESSFUL,
            task_total_count=2,
            task_success_count=1,
            task_failed_count=1,
            status_last_updated_at=_at(1667218329),
            target_type="node",
            task_data="",
            tasks=(
                JobTask(
                    task_id="t-1",
                    task_name="edge-node-a",
                    status=JobStatus.SUCCESSFUL,
                    reason="",
                    created_at=_at(1667218309),
                    target_id="node-a",
                    extension_info=(),
                ),
                JobTask(
                    task_id="t-2",
                    task_name="edge-node-b",
                    status=JobStatus.FAILED,
                    reason="node offline",
                    created_at=_at(1667218309),
                    target_id="node-b",
                    extension_info=info,
                ),
            ),
            targets=(
                JobTarget(target_id="node-a"),
                JobTarget(target_id="node-b", extension_info=info),
            ),
        ) == _decode(EXAMPLE)

    def test_records_are_immutable_and_hashable(self) -> None:
        """A detail, its tasks and targets can be set members and not be changed."""
        detail = _decode(EXAMPLE)

        assert 1 == len({detail, _decode(EXAMPLE)})
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            detail.tasks[0].status = "x"  # type: ignore[misc]

    def test_unknown_values_and_fields_are_kept_or_ignored(self) -> None:
        """A new job type or task status stays a plain string; new fields are
        ignored, as in the listing."""
        body = copy.deepcopy(EXAMPLE)
        body["job_type"] = "edge_reboot"
        body["tasks"][0]["status"] = "Retrying"
        body["tasks"][0]["node_ip"] = "10.0.0.1"
        body["region"] = "cn-north-4"
        detail = _decode(body)

        assert ("edge_reboot", "Retrying") == (detail.job_type, detail.tasks[0].status)
        assert not isinstance(detail.tasks[0].status, JobStatus)

    @given(seed=st.integers(0, 1000), index=st.integers(0, 59))
    def test_to_job_is_what_the_listing_decodes(self, seed: int, index: int) -> None:
        """to_job() of a detail equals the BatchJob the list call gives for the
        same record."""
        job = generate_jobs("p", 60, seed=seed)[index]
        listed = decode_page(
            orjson.dumps({"job_count": 1, "jobs": [job]}), project_id="p", offset=0
        ).jobs[0]

        detail = decode_job_detail(
            orjson.dumps(job_detail(job)), project_id="p", job_id=job["job_id"]
        )

        assert listed == detail.to_job()
        assert isinstance(detail.to_job(), BatchJob)
        assert listed.is_final == detail.is_final


_TOLERATED = [
    ((), "description", ""),
    ((), "task_data", ""),
    ((), "tasks", ()),
    ((), "targets", ()),
    (("tasks", 1), "reason", ""),
    (("tasks", 1), "extension_info", ()),
    (("targets", 1), "extension_info", ()),
]


def _at_path(body: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    for step in path:
        body = body[step]  # type: ignore[index]
    return body


class TestTolerance:
    @pytest.mark.parametrize(("path", "name", "empty"), _TOLERATED)
    @pytest.mark.parametrize("missing", [False, True], ids=["null", "missing"])
    def test_null_or_missing_is_empty(
        self,
        path: tuple[str | int, ...],
        name: str,
        empty: object,
        missing: bool,
    ) -> None:
        """Go writes an empty string or slice as null, or leaves it out: the
        field is then empty, not an error."""
        body = copy.deepcopy(EXAMPLE)
        record = _at_path(body, path)
        if missing:
            del record[name]
        else:
            record[name] = None

        decoded: Any = _decode(body)
        for step in path:
            decoded = getattr(decoded, step) if isinstance(step, str) else decoded[step]
        assert empty == getattr(decoded, name)


_OPTIONAL = {name for path, name, _ in _TOLERATED if not path}
_REQUIRED = [
    *(((), name) for name in EXAMPLE if name not in _OPTIONAL),
    *(
        (("tasks", 1), name)
        for name in ("task_id", "task_name", "status", "created_at", "target_id")
    ),
    (("targets", 0), "target_id"),
    (("tasks", 1, "extension_info", 0), "key"),
    (("targets", 1, "extension_info", 0), "value"),
]


def _dollar(path: tuple[str | int, ...], name: str) -> str:
    return (
        "$"
        + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in path)
        + (f".{name}")
    )


class TestStrict:
    @pytest.mark.parametrize(("path", "name"), _REQUIRED)
    def test_missing_required_field_names_its_path(
        self, path: tuple[str | int, ...], name: str
    ) -> None:
        """Every field not tolerated is required; its absence is a DecodeError
        that names the job and the field's path."""
        body = copy.deepcopy(EXAMPLE)
        del _at_path(body, path)[name]

        with pytest.raises(DecodeError) as info:
            _decode(body)

        assert f"required field missing @ {_dollar(path, name)}" in (
            info.value.problems
        )
        assert f"job {JOB_ID}" in str(info.value)
        assert ("p1", "r-1") == (info.value.project_id, info.value.request_id)

    @pytest.mark.parametrize(
        ("path", "name"), [*_REQUIRED, *[t[:2] for t in _TOLERATED]]
    )
    @pytest.mark.parametrize("value", [True, 1.5, "7", {"a": 1}], ids=repr)
    def test_a_wrong_json_type_names_its_path(
        self, path: tuple[str | int, ...], name: str, value: object
    ) -> None:
        """A value of the wrong JSON type is never coerced: a DecodeError names
        where it is."""
        body = copy.deepcopy(EXAMPLE)
        record = _at_path(body, path)
        if isinstance(record[name], str) and isinstance(value, str):
            value = 7  # text where text belongs is right: try a number
        if name.endswith("_at") and isinstance(value, float):
            value = "1.5"  # a float is Unix seconds too
        record[name] = value

        with pytest.raises(DecodeError) as info:
            _decode(body)

        assert any(p.endswith(f"@ {_dollar(path, name)}") for p in info.value.problems)

    @pytest.mark.parametrize(
        "body", [b"<html>502</html>", b"[1, 2]", b'"text"', b""], ids=repr
    )
    def test_not_a_json_object(self, body: bytes) -> None:
        """A body that is not a JSON object is a DecodeError, not a crash."""
        with pytest.raises(DecodeError):
            _decode(body)


class TestGetJob:
    async def test_one_request_to_the_documented_path(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """get_job sends GET /v2/{project}/productmgr/jobs/{job} with the listing's
        headers, and gives the decoded detail with its request id honoured."""
        mocked.get(
            _show_url(), body=orjson.dumps(EXAMPLE), headers={"X-Request-Id": "r-9"}
        )

        detail = await client.get_job(PROJECT, JOB_ID, instance_id="inst-a")

        assert _decode(EXAMPLE) == detail
        [((method, url), [call])] = mocked.requests.items()
        assert ("GET", _show_url()) == (method, url)
        assert {
            "Content-Type": "application/json",
            "X-Project-Id": PROJECT,
            "X-Auth-Token": TOKEN,
            "ief-instance-id": "inst-a",
        } == call.kwargs["headers"]

    async def test_an_answer_about_another_job_is_masked_and_named(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """An answer whose job_id echoes the token is refused as a job detail's
        DecodeError naming both ids, the token masked in every form of it."""
        echoed = {**EXAMPLE, "job_id": f"echo-{TOKEN}"}
        mocked.get(_show_url(), body=orjson.dumps(echoed))

        with pytest.raises(DecodeError) as info:
            await client.get_job(PROJECT, JOB_ID)

        error = info.value
        assert "job detail" == error.answer
        assert JOB_ID in str(error)
        assert "echo-***" in str(error)
        for form in (str(error), repr(error), *error.problems):
            assert TOKEN not in form
        assert TOKEN.encode() not in pickle.dumps(error)

    async def test_an_unknown_job_is_not_found(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """A 404 is NotFoundError naming the project, with IEF's code; not retried."""
        body = {"error_code": "IEF.100404", "error_msg": "no such job"}
        mocked.get(_show_url(), status=404, body=orjson.dumps(body), repeat=True)

        with pytest.raises(NotFoundError) as info:
            await client.get_job(PROJECT, JOB_ID)

        assert (404, "IEF.100404", PROJECT) == (
            info.value.status,
            info.value.error_code,
            info.value.project_id,
        )
        assert info.value.offset is None  # not a page: no offset to resume from
        assert 1 == client.requests_sent

    async def test_a_temporary_failure_is_retried(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """A 503 then a 200: the retry policy applies as it does to a page."""
        mocked.get(_show_url(), status=503, body=b"busy")
        mocked.get(_show_url(), body=orjson.dumps(EXAMPLE))

        detail = await client.get_job(PROJECT, JOB_ID)

        assert JOB_ID == detail.job_id
        assert 2 == client.requests_sent

    async def test_refused_credentials(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """A 401 is AuthenticationError, and the token is in no message."""
        body = {"error_code": "APIG.0301", "error_msg": "Incorrect IAM"}
        mocked.get(_show_url(), status=401, body=orjson.dumps(body))

        with pytest.raises(AuthenticationError) as info:
            await client.get_job(PROJECT, JOB_ID)

        assert TOKEN not in str(info.value)
        assert TOKEN not in repr(info.value)

    async def test_the_body_bound_holds(self, mocked: aioresponses) -> None:
        """A detail larger than max_body_size is refused, as a page is."""
        mocked.get(_show_url(), body=orjson.dumps(EXAMPLE))
        async with IefClient(
            ENDPOINT, auth=TokenAuth(TOKEN), max_body_size=100
        ) as client:
            with pytest.raises(TransportError, match="max_body_size"):
                await client.get_job(PROJECT, JOB_ID)

    async def test_a_bad_body_is_a_decode_error(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """A 200 whose body is not the documented JSON is a DecodeError."""
        mocked.get(_show_url(), body=b"<html>oops</html>")

        with pytest.raises(DecodeError, match=JOB_ID) as info:
            await client.get_job(PROJECT, JOB_ID)

        # it is one job's details that could not be read, not a page
        assert str(info.value).startswith("undecodable job detail (project ")
        assert "page" not in str(info.value)

    @pytest.mark.parametrize(
        "job_id", ["", "../jobs", "a/b", "a?b=1", "a b", "%2e%2e", "x" * 129, 7]
    )
    async def test_a_job_id_that_is_no_plain_segment_is_refused_at_the_call(
        self, mocked: aioresponses, client: IefClient, job_id: str
    ) -> None:
        """ValueError (TypeError for one not a str) before any request: a job
        id cannot change the path."""
        error = ValueError if isinstance(job_id, str) else TypeError
        with pytest.raises(error, match="job_id"):
            await client.get_job(PROJECT, job_id)

        assert 0 == client.requests_sent
        assert {} == mocked.requests

    async def test_a_bad_project_id_or_instance_id_is_refused_at_the_call(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """The project id and instance id are checked as the listing checks them."""
        with pytest.raises(ValueError, match="project_id"):
            await client.get_job("../p", JOB_ID)
        with pytest.raises(ValueError, match="instance_id"):
            await client.get_job(PROJECT, JOB_ID, instance_id="")

        assert {} == mocked.requests
