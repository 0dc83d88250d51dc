"""The compiled decoding path (the `fast` extra) against the pure one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ief_jobs
from ief_jobs import BatchJobDetail, DecodeError, JobPage, JobStatus, JobType, codec
from ief_jobs.emulator import generate_jobs
from ief_jobs.emulator._data import job_detail

compiled = pytest.importorskip("ief_jobs._compiled")  # the `fast` extra


# -- bodies: JSON text written by hand, so it can say what orjson.dumps cannot --


@attrs.frozen
class _Raw:
    """JSON text as is: 1e400, a 30-digit integer, deep nesting."""

    text: bytes


@attrs.frozen
class _Object:
    """A JSON object as pairs, so a key may come twice."""

    pairs: tuple[tuple[str, Any], ...]


def _dump(value: Any) -> bytes:
    if isinstance(value, _Raw):
        return value.text
    if isinstance(value, _Object):
        inner = b",".join(_dump(k) + b":" + _dump(v) for k, v in value.pairs)
        return b"{" + inner + b"}"
    if isinstance(value, dict):
        return _dump(_Object(tuple(value.items())))
    if isinstance(value, list):
        return b"[" + b",".join(_dump(v) for v in value) + b"]"
    if type(value) is int:  # any size: orjson.dumps stops at 64 bits
        return str(value).encode()
    return orjson.dumps(value)


_FIELDS = [a.name for a in attrs.fields(ief_jobs.BatchJob)]
_HOSTILE_NUMBERS = [
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    -(2**63) - 1,
    253_402_300_799,  # the last second of 9999
    253_402_300_800,
    -62_135_596_800,  # the first second of year 1
    -62_135_596_801,
    0,
    -1,
    1.5,
    1e300,
    -0.0,
    1648339531.999999,
    _Raw(b"1e400"),
    _Raw(b"-1e400"),
    _Raw(b"123456789012345678901234567890"),
    _Raw(b"1E2"),
    _Raw(b"1.0"),
    _Raw(b"-0"),
]
_TIME_TEXT = [
    "2022-10-31T12:11:48",
    "2022-10-31T12:11:48Z",
    "2022-10-31T12:11:48+08:00",
    "2022-10-31",
    "1648339531",
]
_hostile = st.one_of(
    st.sampled_from(_HOSTILE_NUMBERS),
    st.sampled_from(_TIME_TEXT),
    st.sampled_from([None, True, False, "", "3", [], {}, [1], {"a": None}]),
    st.sampled_from([s.value for s in JobStatus] + ["Rolling_back", "node_upgrade"]),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.integers(1, 1100).map(lambda n: _Raw(b"[" * n + b"]" * n)),
    st.integers(1, 1100).map(lambda n: _Raw(b'{"a":' * n + b"1" + b"}" * n)),
)


_text = st.text(max_size=6)
_times = st.integers(-62_135_596_800, 253_402_300_799)  # what a datetime holds
_counts = st.integers(-(2**63), 2**63 - 1)
_known = [t.value for t in JobType] + [s.value for s in JobStatus]
# values of the right JSON type: the compiled path decodes these itself
_VALID = {
    "job_id": _text,
    "job_name": _text,
    "job_type": st.sampled_from(_known) | _text,
    "created_at": _times,
    "status": st.sampled_from(_known) | _text,
    "task_total_count": _counts,
    "task_success_count": _counts,
    "task_failed_count": _counts,
    "status_last_updated_at": _times,
    "description": st.none() | _text,
}


@st.composite
def _record(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    record: dict[str, Any] = dict(base)
    for key in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
        record[key] = draw(_VALID[key])
    if draw(st.integers(0, 4)) == 4:  # one field at odds with the documentation
        kind = draw(st.sampled_from(["hostile", "drop", "extra"]))
        key = draw(st.sampled_from(_FIELDS))
        if kind == "hostile":
            record[key] = draw(_hostile)
        elif kind == "drop":
            del record[key]
        else:
            record[draw(st.sampled_from(["task_count", "x", ""]))] = draw(_hostile)
    pairs = tuple(record.items())
    if draw(st.integers(0, 3)) == 3:  # a key twice: the last one counts
        key = draw(st.sampled_from([k for k, _ in pairs]))
        pairs = ((key, draw(_hostile)), *pairs)
    return _Object(pairs)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes | str:
    size = draw(st.integers(0, 4))
    jobs = generate_jobs("p", size, seed=draw(st.integers(0, 50)))
    records = [draw(_record(job)) if draw(st.booleans()) else job for job in jobs]
    count: Any = draw(
        st.sampled_from([size, 0, 1000])
        if draw(st.integers(0, 3)) < 3  # hypothesis favours the low end
        else st.one_of(_counts, _hostile)
    )
    page: list[tuple[str, Any]] = [("job_count", count), ("jobs", records)]
    shapes = ["page"] * 5 + ["null", "missing", "extra", "dup", "bad"]
    shape = draw(st.sampled_from(shapes))
    if shape == "null":
        page[1] = ("jobs", None)
    elif shape == "missing":
        page.pop(1)
    elif shape == "extra":
        page.append(("request_id", draw(_hostile)))
    elif shape == "dup":
        page.insert(0, (draw(st.sampled_from(["job_count", "jobs"])), draw(_hostile)))
    elif shape == "bad":
        page[1] = ("jobs", draw(_hostile))
    body = _dump(_Object(tuple(page)))
    cut = draw(st.sampled_from(["whole"] * 6 + ["truncate", "flip", "top"]))
    if cut == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif cut == "flip":
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]
    elif cut == "top":
        body = _dump(draw(_hostile))
    if draw(st.booleans()):
        return body.decode("utf-8", "surrogateescape")  # decode_page takes str too
    return body


# -- one answer ---------------------------------------------------------------


def _fields(record: Any) -> tuple[Any, ...]:
    # == alone would miss a str where an enum member belongs (StrEnum), or a
    # timezone: compare each value's type and tzinfo too
    return tuple(
        (type(v), v, getattr(v, "tzinfo", None))
        for v in attrs.astuple(record, recurse=False)
    )


def _answer(decode: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        result = decode()
    except DecodeError as exc:
        return ("error", type(exc), str(exc), exc.problems)
    if isinstance(result, JobPage):
        return ("page", result, tuple(_fields(job) for job in result.jobs))
    return ("detail", result, _fields(result))


def _both(decode: Callable[[], Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    before = codec._compiled
    try:
        codec._use(None)
        pure = _answer(decode)
        codec._use(compiled)
        fast = _answer(decode)
    finally:
        codec._use(before)
    return pure, fast


class TestOneAnswer:
    @given(body=_bodies(), offset=st.sampled_from([0, 3, 2000]))
    def test_pages_decode_alike(self, body: bytes | str, offset: int) -> None:
        """Valid, near-valid and hostile list bodies: both paths give the same
        records, field types included, or the same error type and text."""
        pure, fast = _both(
            lambda: codec.decode_page(body, project_id="p", offset=offset)
        )

        assert pure == fast

    @given(
        seed=st.integers(0, 1000),
        changes=st.dictionaries(
            st.sampled_from(["status", "created_at", "tasks"]), _hostile
        ),
        task_changes=st.dictionaries(
            st.sampled_from(["reason", "created_at", "x"]), _hostile
        ),
    )
    def test_details_decode_alike(
        self, seed: int, changes: dict[str, Any], task_changes: dict[str, Any]
    ) -> None:
        """ShowBatchJob bodies, tasks and all: the same detail or the same error."""
        detail = job_detail(generate_jobs("p", 1, seed=seed)[0])
        detail.update(changes)
        tasks = detail.get("tasks")
        if isinstance(tasks, list) and tasks and isinstance(tasks[0], dict):
            tasks[0].update(task_changes)
        body = _dump(detail)

        pure, fast = _both(
            lambda: codec.decode_job_detail(body, project_id="p", job_id="j")
        )

        assert pure == fast


class TestStaysCompiled:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("status", "Rolling_back"),
            ("job_type", "edge_reboot"),
            ("description", None),
        ],
    )
    def test_unknown_values_and_nulls_need_no_fallback(
        self, field: str, value: object
    ) -> None:
        """A status or job type this version does not know, or a null description,
        is decoded by the compiled path itself: such pages stay fast."""
        jobs = generate_jobs("p", 5)
        for job in jobs:
            job[field] = value
        body = orjson.dumps({"job_count": 5, "jobs": jobs})

        count, unbuilt = compiled.make_page_decoder(None)(body)
        records = unbuilt.build()

        assert 5 == count
        assert [value or ""] * 5 == [getattr(r, field) for r in records]
        assert [type(value or "")] * 5 == [type(getattr(r, field)) for r in records]

    def test_a_detail_needs_no_fallback(self) -> None:
        """A ShowBatchJob body of the emulator's decodes on the compiled path."""
        job = generate_jobs("p", 1)[0]

        detail = compiled.decode_job_detail(orjson.dumps(job_detail(job)))

        assert isinstance(detail, BatchJobDetail)
        assert job["job_id"] == detail.job_id
        assert isinstance(detail.created_at, datetime)

    @pytest.mark.parametrize(
        "body",
        [
            b'{"job_count": 1, "jobs": [], "x": 1e400}',
            b'{"job_count": 18446744073709551615, "jobs": []}',
            b'{"job_count": 1, "jobs": [{"created_at": 1.5}]}',
        ],
    )
    def test_what_it_cannot_vouch_for_is_refused(self, body: bytes) -> None:
        """An unknown field (unchecked by msgspec), an int past int64 or a float
        time is refused, for the pure path to decide."""
        with pytest.raises(compiled.REFUSED):
            compiled.make_page_decoder(None)(body)


class TestGenerated:
    @pytest.mark.parametrize("plainly", [True, False], ids=["building", "init"])
    def test_structs_and_loop_follow_the_attrs_fields(self, plainly: bool) -> None:
        """A class with a new field, a factory default and one time gets a wire
        struct and a loop with no edit beside the class; built either way."""

        @attrs.frozen(weakref_slot=False)
        class Wider:
            job_id: str
            created_at: datetime
            status: JobStatus | str
            extra: int
            tags: str = attrs.Factory(lambda: "none")

        building = codec._building_class(Wider) if plainly else None
        build = compiled._jobs_builder(Wider, building)
        wire = compiled.wire_struct(Wider)
        structs = msgspec.json.decode(
            b'[{"job_id": "j", "created_at": 0, "status": "Failed", "extra": 3},'
            b' {"job_id": "k", "created_at": 60, "status": "New", "extra": 4,'
            b' "tags": "t"}]',
            type=list[wire],
        )

        assert (
            Wider("j", datetime(1970, 1, 1, tzinfo=UTC), JobStatus.FAILED, 3),
            Wider("k", datetime(1970, 1, 1, 0, 1, tzinfo=UTC), "New", 4, "t"),
        ) == build(structs)
        assert [Wider, Wider] == [type(r) for r in build(structs)]
        with pytest.raises(msgspec.ValidationError, match="unknown field"):
            msgspec.json.decode(b'{"job_id": "j", "x": 1}', type=wire)

    @pytest.mark.parametrize("plainly", [True, False], ids=["building", "init"])
    def test_a_class_with_no_time_gets_a_loop_too(self, plainly: bool) -> None:
        """With no time to convert, the loop reads the structs alone."""

        @attrs.frozen(weakref_slot=False)
        class Timeless:
            job_id: str
            status: JobStatus | str

        building = codec._building_class(Timeless) if plainly else None
        build = compiled._jobs_builder(Timeless, building)
        structs = msgspec.json.decode(
            b'[{"job_id": "j", "status": "Failed"}, {"job_id": "k", "status": "x"}]',
            type=list[compiled.wire_struct(Timeless)],
        )

        assert (Timeless("j", JobStatus.FAILED), Timeless("k", "x")) == build(structs)

    def test_a_field_named_as_the_generated_code_is_refused(self) -> None:
        """A field may not shadow a helper or a local of the generated loop."""

        @attrs.frozen
        class Clashing:
            job_id: str
            cls: str

        with pytest.raises(TypeError, match=r"Clashing\.cls: name taken"):
            compiled._jobs_builder(Clashing, None)

    def test_an_unknown_field_type_fails_at_generation(self) -> None:
        """A field type msgspec is not told how to check is refused, not skipped."""

        @attrs.frozen
        class Odd:
            values: list[int]

        with pytest.raises(TypeError, match="no compiled decoding for"):
            compiled.wire_struct(Odd)


class TestWhichPath:
    def test_decoder_name_says_which(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """decoder_name() follows the active path; it is exported."""
        assert ief_jobs.decoder_name is codec.decoder_name
        assert "decoder_name" in ief_jobs.__all__
        monkeypatch.setattr(codec, "_compiled", None)
        assert "pure" == ief_jobs.decoder_name()
        monkeypatch.setattr(codec, "_compiled", compiled)
        assert "msgspec" == ief_jobs.decoder_name()

    @pytest.mark.parametrize(("choice", "name"), [("pure", "pure"), ("", "msgspec")])
    def test_the_environment_chooses_at_import(self, choice: str, name: str) -> None:
        """IEF_JOBS_DECODER=pure forces the pure path; unset, msgspec is used."""
        env = {**os.environ, "IEF_JOBS_DECODER": choice}
        printed = subprocess.run(
            [sys.executable, "-c", "import ief_jobs; print(ief_jobs.decoder_name())"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

        assert name == printed.strip()

    @pytest.mark.parametrize("choice", ["pure", ""])
    def test_version_says_which(self, choice: str) -> None:
        """ief-jobs --version names the decoding path (and msgspec's version)."""
        env = {**os.environ, "IEF_JOBS_DECODER": choice}
        printed = subprocess.run(
            [
                sys.executable,
                "-c",
                "from ief_jobs.cli import main; main()",
                "--version",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

        name = "pure" if choice == "pure" else f"msgspec {compiled.VERSION}"
        assert f"decoder: {name}" == printed.splitlines()[-1]
