"""
Turn IEF response bodies into `JobPage`s: orjson underneath, one cattrs converter.

The converter is built once, at import; cattrs generates each class's structure
function once, not per record. That keeps decoding, the one CPU cost of a listing,
within a small factor of ``orjson.loads`` into plain dicts
(``benchmarks/bench_decode.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import repeat
from typing import Any, Final

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter
from cattrs.v import format_exception

from .errors import DecodeError
from .models import BatchJob, JobPage, JobStatus, JobType

__all__ = ["decode_page", "make_converter"]


@attrs.frozen
class _WirePage:
    job_count: int
    jobs: tuple[BatchJob, ...]


def _structure_str(value: Any, _: type) -> str:
    # cattrs would call str() on anything; a number where text belongs is a bad body
    if type(value) is not str:
        msg = f"expected a string, got {type(value).__name__}"
        raise TypeError(msg)
    return value


def _structure_int(value: Any, _: type) -> int:
    if type(value) is not int:  # bool is an int to Python, not to JSON
        msg = f"expected an integer, got {type(value).__name__}"
        raise TypeError(msg)
    return value


def _structure_count(value: Any, _: type) -> int:
    count = _structure_int(value, int)
    if count < 0:
        msg = f"expected a count, got {count}"
        raise ValueError(msg)
    return count


def _from_unix_seconds(value: Any, _: type) -> datetime:
    if type(value) is not int and type(value) is not float:
        msg = f"expected Unix seconds, got {type(value).__name__}"
        raise TypeError(msg)
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        msg = f"Unix seconds out of range: {value!r}"
        raise ValueError(msg) from exc


_JOB_TYPES: Final[dict[str, JobType]] = {t.value: t for t in JobType}
_JOB_STATUSES: Final[dict[str, JobStatus]] = {s.value: s for s in JobStatus}


def _structure_job_type(value: Any, _: type) -> JobType | str:
    # an unknown job type is kept as its string: new types must not break a listing
    if type(value) is not str:
        return _structure_str(value, str)  # raises the same error as any text field
    return _JOB_TYPES.get(value, value)


def _structure_status(value: Any, _: type) -> JobStatus | str:
    if type(value) is not str:
        return _structure_str(value, str)
    return _JOB_STATUSES.get(value, value)


_from_timestamp: Final = datetime.fromtimestamp


def _structure_job_fast(o: Any, _: type) -> BatchJob:
    # Written out rather than generated: inline type checks instead of one hook
    # call per field make decoding a fifth faster (benchmarks/bench_decode.py).
    # Only the fast converter uses it; a record it rejects is explained, path
    # by path, by the detailed converter's generated hook, and the tests hold
    # the two to the same answers.
    job_id = o["job_id"]
    job_name = o["job_name"]
    job_type = o["job_type"]
    created_at = o["created_at"]
    status = o["status"]
    total = o["task_total_count"]
    succeeded = o["task_success_count"]
    failed = o["task_failed_count"]
    updated_at = o["status_last_updated_at"]
    description = o["description"]
    if (
        type(job_id) is not str
        or type(job_name) is not str
        or type(job_type) is not str
        or type(status) is not str
        or type(description) is not str
        or type(total) is not int
        or type(succeeded) is not int
        or type(failed) is not int
        or (type(created_at) is not int and type(created_at) is not float)
        or (type(updated_at) is not int and type(updated_at) is not float)
    ):
        raise TypeError("a field of the wrong JSON type")
    return BatchJob(
        job_id,
        job_name,
        _JOB_TYPES.get(job_type, job_type),
        _from_timestamp(created_at, UTC),
        _JOB_STATUSES.get(status, status),
        total,
        succeeded,
        failed,
        _from_timestamp(updated_at, UTC),
        description,
    )


def _describe(exc: BaseException, type_: type | None) -> str:
    # our hooks' own messages say what was wrong; cattrs' generic ones for the rest
    if isinstance(exc, TypeError | ValueError) and type(exc).__module__ == "builtins":
        text = str(exc)
        if text.startswith(("expected ", "Unix seconds")):
            return text
    return format_exception(exc, type_)


def make_converter(*, detailed_validation: bool = True) -> OrjsonConverter:
    """
    Build the converter for IEF bodies.

    Unix seconds become aware UTC datetimes, unknown job types and statuses stay
    plain strings, unknown fields are ignored, and text or numbers of the wrong
    JSON type are rejected rather than coerced.
    """
    conv = _make_orjson_converter(detailed_validation=detailed_validation)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(datetime, _from_unix_seconds)
    # Not register_structure_hook(JobType | str, ...): the preconf union
    # passthrough would win over it; a predicate on the exact union does not.
    conv.register_structure_hook_func(lambda t: t == JobType | str, _structure_job_type)
    conv.register_structure_hook_func(lambda t: t == JobStatus | str, _structure_status)
    if not detailed_validation:
        conv.register_structure_hook(BatchJob, _structure_job_fast)
    structure_jobs = conv.get_structure_hook(tuple[BatchJob, ...])
    structure_job = conv.get_structure_hook(BatchJob)

    def _structure_job_list(value: Any, type_: type) -> tuple[BatchJob, ...]:
        if type(value) is not list:  # a dict or a string is iterable too
            msg = f"expected an array, got {type(value).__name__}"
            raise TypeError(msg)
        if detailed_validation:
            jobs: tuple[BatchJob, ...] = structure_jobs(value, type_)  # notes the index
            return jobs
        # map() calls the generated hook from C: no Python frame per record
        return tuple(map(structure_job, value, repeat(BatchJob)))

    conv.register_structure_hook(
        _WirePage,
        make_dict_structure_fn(
            _WirePage,
            conv,
            job_count=cattrs.override(struct_hook=_structure_count),
            jobs=cattrs.override(struct_hook=_structure_job_list),
        ),
    )
    return conv


# Two converters, both built once: the fast one structures without collecting
# errors; only a body it rejects is structured again, by the detailed one, to
# name every bad place by path. Good bodies are validated once.
_CONVERTER: Final = make_converter(detailed_validation=False)
_DETAILED: Final = make_converter()
_structure_wire_page: Final = _CONVERTER.get_structure_hook(_WirePage)
_explain_wire_page: Final = _DETAILED.get_structure_hook(_WirePage)


def _problems(data: dict[str, Any]) -> tuple[str, ...]:
    try:
        _explain_wire_page(data, _WirePage)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        return tuple(cattrs.transform_error(exc, format_exception=_describe))
    return ("not the documented shape",)  # pragma: no cover (the fast path agreed)


def decode_page(
    body: bytes | str,
    *,
    project_id: str,
    offset: int,
    request_id: str | None = None,
) -> JobPage:
    """
    Decode one response body of the list call into a `JobPage`.

    Example::

        page = decode_page(b'{"job_count": 0, "jobs": []}', project_id="p1", offset=0)
        assert page.jobs == ()

    Raises:
        DecodeError: The body is not JSON, or not the documented shape; its
            *problems* name each bad place by path (``$.jobs[3].created_at``).
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(
            problems=(f"not JSON: {exc}",),
            project_id=project_id,
            offset=offset,
            request_id=request_id,
        ) from None
    if type(data) is not dict:
        raise DecodeError(
            problems=(f"expected a JSON object @ $, got {type(data).__name__}",),
            project_id=project_id,
            offset=offset,
            request_id=request_id,
        )
    try:
        wire = _structure_wire_page(data, _WirePage)
    except (
        cattrs.BaseValidationError,
        TypeError,
        ValueError,
        KeyError,
        AttributeError,
        OverflowError,  # Unix seconds out of range, from the fast hook
        OSError,
    ):
        raise DecodeError(
            problems=_problems(data),
            project_id=project_id,
            offset=offset,
            request_id=request_id,
        ) from None
    return JobPage(
        project_id=project_id,
        offset=offset,
        job_count=wire.job_count,
        jobs=wire.jobs,
        request_id=request_id,
    )
