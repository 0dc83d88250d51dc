from __future__ import annotations

import pickle
from datetime import UTC, datetime
from typing import Any

import attrs
import cattrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from _decoders import _decoder  # noqa: F401 (autouse: every test, both paths)
from _support import EXAMPLE, wire_jobs
from ief_jobs import BatchJob, DecodeError, JobPage, JobStatus, JobType, codec
from ief_jobs.codec import decode_page

# the hours of Unix time an aware datetime holds (years 1 to 9999)
_FIRST_HOUR = int(datetime(1, 1, 1, tzinfo=UTC).timestamp()) // 3600
_LAST_HOUR = int(datetime(9999, 12, 31, 23, tzinfo=UTC).timestamp()) // 3600


def _body(**changes: Any) -> bytes:
    job = orjson.loads(EXAMPLE.read_bytes())["jobs"][0]
    job.update(changes)
    return orjson.dumps({"job_count": 3, "jobs": [job, job, job]})


class TestDocumentedExample:
    def test_decodes_exactly(self) -> None:
        """The documented example decodes to its two records, field by field."""
        page = decode_page(
            EXAMPLE.read_bytes(), project_id="p1", offset=0, request_id="r-1"
        )

        assert (
            JobPage(
                project_id="p1",
                offset=0,
                job_count=2,
                request_id="r-1",
                jobs=(
                    BatchJob(
                        job_id="66273c66-f72e-4607-8769-3663d255fb83",
                        job_name="aaa",
                        job_type=JobType.DEPLOYMENT_DEPLOY,
                        created_at=datetime(2022, 10, 31, 12, 11, 48, tzinfo=UTC),
                        status=JobStatus.SUCCESSFUL,
                        task_total_count=2,
                        task_success_count=2,
                        task_failed_count=0,
                        status_last_updated_at=datetime(
                            2022, 10, 31, 12, 12, 9, tzinfo=UTC
                        ),
                        description="",
                    ),
                    BatchJob(
                        job_id="0a95c8df-eab5-4a8b-a63b-df9f208ad0ce",
                        job_name="test0929-pm",
                        job_type=JobType.DEPLOYMENT_DEPLOY,
                        created_at=datetime(2022, 9, 29, 9, 40, 10, tzinfo=UTC),
                        status=JobStatus.SUCCESSFUL,
                        task_total_count=1,
                        task_success_count=1,
                        task_failed_count=0,
                        status_last_updated_at=datetime(
                            2022, 9, 29, 9, 40, 11, tzinfo=UTC
                        ),
                        description="",
                    ),
                ),
            )
            == page
        )
        assert 2 == page.next_offset

    def test_records_are_hashable_and_frozen(self) -> None:
        """Records are immutable and hashable, so they go in sets and dict keys."""
        page = decode_page(EXAMPLE.read_bytes(), project_id="p1", offset=0)

        assert 2 == len(set(page.jobs) | set(page.jobs))
        with pytest.raises(AttributeError):
            page.jobs[0].status = "Failed"  # type: ignore[misc]


class TestBuiltLater:
    def test_a_page_built_later_is_the_page_decoded_now(self) -> None:
        """`decode_page_unbuilt`, once built, gives what `decode_page` gives; the
        compiled path leaves the records unbuilt until then (the pure path
        builds them as it checks them)."""
        body = orjson.dumps({"job_count": 7, "jobs": wire_jobs(5)})

        answer = codec.decode_page_unbuilt(
            body, project_id="p", offset=2, request_id="r"
        )
        page = answer if isinstance(answer, JobPage) else answer.build()

        assert decode_page(body, project_id="p", offset=2, request_id="r") == page
        assert 5 == len(page.jobs)
        if codec.decoder_name() == "msgspec":
            assert isinstance(answer, codec.UnbuiltPage)
            assert 5 == answer.records
            assert answer.build() == page
            assert answer.build().jobs[0] is not page.jobs[0]  # built anew
        else:
            assert isinstance(answer, JobPage)

    def test_an_empty_page_needs_no_building(self) -> None:
        """An empty page (or null jobs where none are due) is a JobPage at once."""
        answer = codec.decode_page_unbuilt(
            b'{"job_count": 3, "jobs": null}', project_id="p", offset=3
        )

        assert JobPage(project_id="p", offset=3, job_count=3, jobs=()) == answer


class TestTolerance:
    def test_unknown_fields_are_ignored(self) -> None:
        """New fields and the older revision's names do not break decoding."""
        page = decode_page(
            _body(task_count=9, updated_at=1, brand_new={"x": 1}),
            project_id="p1",
            offset=0,
        )

        assert 3 == len(page.jobs)

    def test_unknown_enum_values_are_kept_as_str(self) -> None:
        """A job type or status we don't know yet stays a plain string."""
        job = decode_page(
            _body(job_type="edge_reboot", status="Rolling_back"),
            project_id="p1",
            offset=0,
        ).jobs[0]

        assert "edge_reboot" == job.job_type
        assert not isinstance(job.job_type, JobType)
        assert "Rolling_back" == job.status
        assert not job.is_final

    def test_known_values_are_enum_members(self) -> None:
        """Known wire values become enum members that still equal their strings."""
        job = decode_page(_body(status="Timed_out"), project_id="p", offset=0).jobs[0]

        assert JobStatus.TIMED_OUT is job.status
        assert "Timed_out" == job.status
        assert job.is_final

    def test_datetimes_are_aware_utc(self) -> None:
        """Unix seconds become timezone-aware UTC datetimes."""
        job = decode_page(_body(created_at=0), project_id="p", offset=0).jobs[0]

        assert datetime(1970, 1, 1, tzinfo=UTC) == job.created_at
        assert UTC == job.created_at.tzinfo


class TestGoStyleAnswers:
    """A Go server writes nil slices and empty strings as null, or leaves them out."""

    @pytest.mark.parametrize(
        "body",
        [
            b'{"job_count": 0, "jobs": null}',
            b'{"job_count": 0}',
            b'{"job_count": 40, "jobs": null}',
            b'{"job_count": 10}',
        ],
    )
    def test_no_jobs_where_none_are_due_is_an_empty_page(self, body: bytes) -> None:
        """``jobs`` null or missing at or past ``job_count`` is an empty page."""
        offset = 0 if b'"job_count": 0' in body else 40

        page = decode_page(body, project_id="p", offset=offset)

        assert () == page.jobs
        assert orjson.loads(body)["job_count"] == page.job_count

    def test_no_jobs_where_some_are_due_is_refused(self) -> None:
        """A null ``jobs`` below ``job_count`` is a cut answer: never silently short."""
        with pytest.raises(DecodeError, match="records are due from offset 0"):
            decode_page(b'{"job_count": 3, "jobs": null}', project_id="p", offset=0)

    @pytest.mark.parametrize("drop", [True, False])
    def test_null_or_missing_description_is_empty(self, drop: bool) -> None:
        """``description`` null or missing becomes "", in both converters."""
        job = orjson.loads(EXAMPLE.read_bytes())["jobs"][0]
        if drop:
            del job["description"]
        else:
            job["description"] = None

        page = decode_page(
            orjson.dumps({"job_count": 1, "jobs": [job]}), project_id="p", offset=0
        )

        assert "" == page.jobs[0].description
        assert page.jobs[0] == _DETAILED.structure(job, BatchJob)

    def test_other_fields_stay_strict_about_null(self) -> None:
        """Only fields with a default tolerate null: a null job name is refused."""
        with pytest.raises(DecodeError, match=r"\$\.jobs\[0\]\.job_name"):
            decode_page(_body(job_name=None), project_id="p", offset=0)


class TestGeneratedFastPath:
    def test_structure_is_generated_from_the_attrs_fields(self) -> None:
        """A class with a new field gets a fast hook with no edit beside the class."""

        @attrs.frozen
        class Wider:
            job_id: str
            created_at: datetime
            status: JobStatus | str
            extra: int
            note: str = "none"

        one, many = codec._make_fast_structure(Wider)
        record = {"job_id": "j", "created_at": 0, "status": "Failed", "extra": 3}

        assert Wider("j", datetime(1970, 1, 1, tzinfo=UTC), JobStatus.FAILED, 3) == (
            one(record, Wider)
        )
        assert (one(record, Wider),) == many([record])
        with pytest.raises(TypeError):
            one({**record, "extra": "3"}, Wider)

    def test_fast_records_are_ordinary_frozen_instances(self) -> None:
        """Records the fast path builds behave as BatchJob(...) in every way."""
        [fast] = decode_page(_body(), project_id="p", offset=0).jobs[:1]
        built = _DETAILED.structure(orjson.loads(_body())["jobs"][0], BatchJob)

        assert BatchJob is type(fast)
        assert built == fast
        assert hash(built) == hash(fast)
        assert repr(built) == repr(fast)
        assert fast == pickle.loads(pickle.dumps(fast))  # noqa: S301 (our own bytes)
        assert "x" == attrs.evolve(fast, job_name="x").job_name
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            fast.job_name = "changed"  # type: ignore[misc]

    @given(
        hour=st.integers(min_value=_FIRST_HOUR, max_value=_LAST_HOUR),
        into=st.lists(st.integers(min_value=0, max_value=3599), min_size=2),
    )
    def test_times_equal_fromtimestamp(self, hour: int, into: list[int]) -> None:
        """Seconds of one hour, the first a miss and the rest hits, as fromtimestamp."""
        codec._hour_starts.clear()
        base = orjson.loads(EXAMPLE.read_bytes())["jobs"][0]
        for second in (hour * 3600 + i for i in into):
            # created_at misses or hits; the update a second later hits or misses
            later = min(second + 1, 253_402_300_799)
            record = {**base, "created_at": second, "status_last_updated_at": later}

            job = codec._structure_job_fast(record, BatchJob)

            assert datetime.fromtimestamp(second, UTC) == job.created_at
            assert datetime.fromtimestamp(later, UTC) == job.status_last_updated_at
            assert UTC is job.created_at.tzinfo
            assert UTC is job.status_last_updated_at.tzinfo

    @given(
        second=st.integers(min_value=-(2**70), max_value=_FIRST_HOUR * 3600 - 1)
        | st.integers(min_value=(_LAST_HOUR + 1) * 3600, max_value=2**70)
    )
    def test_times_out_of_range_fail_as_fromtimestamp(self, second: int) -> None:
        """A time no datetime holds raises what fromtimestamp raises, hit or miss."""
        base = orjson.loads(EXAMPLE.read_bytes())["jobs"][0]
        with pytest.raises(Exception) as expected:
            datetime.fromtimestamp(second, UTC)
        for _ in range(2):  # a miss, then what a miss may have left behind
            record = {**base, "created_at": second}
            with pytest.raises(expected.type):
                codec._structure_job_fast(record, BatchJob)

    def test_remembered_hours_are_bounded(self) -> None:
        """A list over more hours than are kept decodes right, in bounded memory."""
        kept = codec._HOURS_KEPT
        base = orjson.loads(EXAMPLE.read_bytes())["jobs"][0]
        # every record an hour apart, its update half an hour later, and back again
        seconds = [1_600_000_000 + 3600 * i + 7 for i in range(kept + 50)]
        records = [
            {**base, "created_at": s, "status_last_updated_at": s + 1800}
            for s in seconds + seconds[:50]
        ]

        jobs = codec._structure_jobs_fast(records)

        assert [datetime.fromtimestamp(s, UTC) for s in seconds + seconds[:50]] == [
            job.created_at for job in jobs
        ]
        assert [
            datetime.fromtimestamp(s + 1800, UTC) for s in seconds + seconds[:50]
        ] == [job.status_last_updated_at for job in jobs]
        assert len(codec._hour_starts) <= kept

    @pytest.mark.parametrize(
        ("decorate", "builds_plainly"),
        [
            (attrs.frozen(weakref_slot=False), True),
            (attrs.frozen(slots=False), True),
            (attrs.frozen, False),  # a __weakref__ slot: no plain class matches
            (attrs.frozen(cache_hash=True, weakref_slot=False), False),
        ],
    )
    def test_every_layout_builds_ordinary_instances(
        self, decorate: Any, builds_plainly: bool
    ) -> None:
        """Where no plain class can become the record, its __init__ builds it."""

        @decorate
        class Shaped:
            job_id: str
            created_at: datetime

        one, many = codec._make_fast_structure(Shaped)
        record = {"job_id": "j", "created_at": 7200}
        built = Shaped("j", datetime(1970, 1, 1, 2, tzinfo=UTC))

        assert builds_plainly == (codec._building_class(Shaped) is not None)
        assert (built, built) == (one(record, Shaped), *many([record]))
        assert Shaped is type(one(record, Shaped))
        assert hash(built) == hash(one(record, Shaped))
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            one(record, Shaped).job_id = "k"

    def test_a_factory_default_is_called_per_record(self) -> None:
        """A default made by a factory stands in fresh for a null or missing value."""

        @attrs.frozen(kw_only=True)
        class Tagged:
            job_id: str = attrs.field(validator=attrs.validators.min_len(1))
            note: str = attrs.Factory(lambda: "none")

        one, many = codec._make_fast_structure(Tagged)

        assert Tagged(job_id="j", note="none") == one({"job_id": "j"}, Tagged)
        assert (Tagged(job_id="j", note="n"),) == many([{"job_id": "j", "note": "n"}])

    def test_a_field_named_as_the_generated_code_is_refused(self) -> None:
        """A field may not shadow a helper or a local of the generated code."""

        @attrs.frozen
        class Clashing:
            job_id: str
            _record: str

        with pytest.raises(TypeError, match=r"Clashing\._record: the name is taken"):
            codec._make_fast_structure(Clashing)

    def test_a_subclass_is_built_through_its_init(self) -> None:
        """A base's slots and __setattr__ are its own: the subclass is called."""

        @attrs.frozen(weakref_slot=False)
        class Base:
            job_id: str

        @attrs.frozen(weakref_slot=False)
        class Derived(Base):
            note: str = ""

        one, _ = codec._make_fast_structure(Derived)

        assert codec._building_class(Derived) is None
        assert Derived("j", "n") == one({"job_id": "j", "note": "n"}, Derived)

    def test_a_class_with_checks_is_built_through_its_init(self) -> None:
        """A class whose __init__ does more than store (a validator) is called."""

        @attrs.frozen
        class Checked:
            job_id: str = attrs.field(validator=attrs.validators.min_len(2))

        one, _ = codec._make_fast_structure(Checked)

        assert Checked("ab") == one({"job_id": "ab"}, Checked)
        with pytest.raises(ValueError):
            one({"job_id": "a"}, Checked)

    def test_an_unknown_field_type_fails_at_generation(self) -> None:
        """A field type the fast path cannot check is refused at import, not skipped."""

        @attrs.frozen
        class Odd:
            values: list[int]

        with pytest.raises(TypeError, match=r"no fast structure for Odd\.values"):
            codec._make_fast_structure(Odd)


class TestBadBodies:
    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            (b"<html>502</html>", "not JSON"),
            (b"", "not JSON"),
            (b"[]", "expected a JSON object @ $"),
            (
                b'{"job_count": 500}',
                (
                    "no jobs (null or missing) where job_count 500 says records "
                    "are due from offset 200 @ $.jobs"
                ),
            ),
            (b'{"job_count": 201, "jobs": null}', "records are due from offset 200"),
            (b'{"jobs": []}', "required field missing @ $.job_count"),
            (
                b'{"job_count": -1, "jobs": []}',
                "expected a count, got -1 @ $.job_count",
            ),
            (b'{"job_count": "2", "jobs": []}', "expected an integer, got str"),
            (b'{"job_count": 1, "jobs": {}}', "expected an array, got dict @ $.jobs"),
            (b'{"job_count": 1, "jobs": [1]}', "@ $.jobs[0]"),
        ],
    )
    def test_shape_errors_name_the_place(self, body: bytes, problem: str) -> None:
        """A body not of the documented shape raises DecodeError saying where;
        decoded for building later, it raises the same, before anything is built."""
        with pytest.raises(DecodeError) as info:
            decode_page(body, project_id="p9", offset=200)
        with pytest.raises(DecodeError) as unbuilt:
            codec.decode_page_unbuilt(body, project_id="p9", offset=200)

        assert "project p9" in str(info.value)
        assert "offset 200" in str(info.value)
        assert problem in str(info.value)
        assert ("p9", 200) == (info.value.project_id, info.value.offset)
        assert str(info.value) == str(unbuilt.value)

    @pytest.mark.parametrize(
        ("field", "value", "problem"),
        [
            ("created_at", "yesterday", "expected Unix seconds, got str"),
            ("created_at", True, "expected Unix seconds, got bool"),
            ("task_total_count", "3", "expected an integer, got str"),
            ("task_failed_count", 1.5, "expected an integer, got float"),
            ("job_name", 7, "expected a string, got int"),
            ("job_id", None, "expected a string, got NoneType"),
            ("description", 0, "expected a string, got int"),
            ("status", 3, "expected a string, got int"),
        ],
    )
    def test_wrong_types_name_the_path(
        self, field: str, value: object, problem: str
    ) -> None:
        """A record field of the wrong type is refused with its JSON path."""
        with pytest.raises(DecodeError) as info:
            decode_page(_body(**{field: value}), project_id="p", offset=0)

        assert f"{problem} @ $.jobs[0].{field}" in info.value.problems

    def test_missing_field_in_a_later_record(self) -> None:
        """The path names the record's index within the page."""
        jobs = wire_jobs(5)
        del jobs[3]["created_at"]

        with pytest.raises(DecodeError) as info:
            decode_page(
                orjson.dumps({"job_count": 5, "jobs": jobs}), project_id="p", offset=0
            )

        assert ("required field missing @ $.jobs[3].created_at",) == info.value.problems


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_record_keys = st.sampled_from(
    [
        "job_id",
        "job_name",
        "job_type",
        "created_at",
        "status",
        "task_total_count",
        "task_success_count",
        "task_failed_count",
        "status_last_updated_at",
        "description",
    ]
)


# one value of each JSON type, and numbers no datetime can hold
_ONE_OF_EACH_TYPE = [None, True, 0, 1.5, "", [], {}, 2**70, -(2**70), float("nan")]
_FAST = codec.make_converter(detailed_validation=False)
_DETAILED = codec.make_converter()


def _structure_or_none(converter: cattrs.Converter, record: object) -> BatchJob | None:
    try:
        return converter.structure(record, BatchJob)
    except (cattrs.BaseValidationError, TypeError, ValueError, LookupError):
        return None
    except (ArithmeticError, OSError):  # Unix seconds out of range
        return None


class TestFuzz:
    @given(body=st.binary(max_size=200))
    def test_random_bytes(self, body: bytes) -> None:
        """Any bytes decode to a JobPage or raise DecodeError, never anything else."""
        try:
            page = decode_page(body, project_id="p", offset=0)
        except DecodeError:
            return
        assert isinstance(page, JobPage)

    @given(
        count=_json,
        records=st.lists(st.dictionaries(_record_keys, _json), max_size=3),
        mutate=st.booleans(),
    )
    def test_random_json(self, count: object, records: list[Any], mutate: bool) -> None:
        """Random JSON of roughly the right shape decodes or raises DecodeError."""
        base = orjson.loads(EXAMPLE.read_bytes())["jobs"][0]
        jobs = [{**base, **r} if mutate else r for r in records]
        body = orjson.dumps({"job_count": count, "jobs": jobs})
        try:
            page = decode_page(body, project_id="p", offset=0)
        except DecodeError as exc:
            assert exc.problems
            return
        assert len(records) == len(page.jobs)

    @given(
        changes=st.dictionaries(
            _record_keys,
            st.sampled_from(_ONE_OF_EACH_TYPE) | _json,
            max_size=2,
        ),
        drop=st.lists(_record_keys, max_size=2),
    )
    def test_fast_hook_agrees_with_cattrs(
        self, changes: dict[str, Any], drop: list[str]
    ) -> None:
        """The hand-written record hook accepts and builds exactly what cattrs' does."""
        record = {**orjson.loads(EXAMPLE.read_bytes())["jobs"][0], **changes}
        for key in drop:
            record.pop(key, None)
        assert _structure_or_none(_FAST, record) == _structure_or_none(
            _DETAILED, record
        )

    @pytest.mark.parametrize("field", [a.name for a in attrs.fields(BatchJob)])
    def test_fast_hook_agrees_for_every_field_and_json_type(self, field: str) -> None:
        """Each field given each JSON type (and unrepresentable times), or missing."""
        base = orjson.loads(EXAMPLE.read_bytes())["jobs"][0]
        records = [{k: v for k, v in base.items() if k != field}]
        records += [{**base, field: value} for value in _ONE_OF_EACH_TYPE]
        for record in records:
            assert _structure_or_none(_FAST, record) == _structure_or_none(
                _DETAILED, record
            ), record
