"""
Turn IEF response bodies into `JobPage`s: orjson underneath, one cattrs converter.

The converter is built once, at import; cattrs generates each class's structure
function once, not per record. That keeps decoding, the one CPU cost of a listing,
within a small factor of ``orjson.loads`` into plain dicts
(``benchmarks/bench_decode.py``).

With the ``fast`` extra (msgspec) a compiled path (`ief_jobs._compiled`) decodes
each body first, into the same records; whatever it refuses is decoded here, so
this pure path stays the reference and the source of every error message.
``IEF_JOBS_DECODER=pure`` in the environment, read at import, forces the pure
path; `decoder_name` says which one is active.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from types import ModuleType
from typing import Any, Final, TypeVar

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter
from cattrs.v import format_exception

from .errors import DecodeError
from .models import (
    BatchJob,
    BatchJobDetail,
    ExtensionInfo,
    JobPage,
    JobStatus,
    JobTarget,
    JobTask,
    JobType,
)

__all__ = ["decode_job_detail", "decode_page", "decoder_name", "make_converter"]

T = TypeVar("T")


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


# -- the fast path: generated from BatchJob's attrs fields, once, at import ---
#
# cattrs generates one hook per field and calls it per value; here one function
# per class checks every JSON type inline and builds the records in one loop (no
# Python call per record or per field), which is what keeps decoding within a
# small factor of ``orjson.loads`` (benchmarks/bench_decode.py). It is generated
# from the attrs fields, so a new field needs no second edit, only a type this
# table knows. A record it rejects is explained, path by path, by the detailed
# converter's cattrs hooks; the tests hold the two to the same answers.

# Two aware datetimes a record cost ~2 x 330 ns through ``fromtimestamp``, a
# third of what structuring costs; the start of the hour, remembered, plus a
# ready timedelta costs ~140 ns. Jobs are listed in creation order, so one hour
# serves many records; where every time falls in an hour of its own, each costs
# ~130 ns more than ``fromtimestamp`` (a list that sparse is a short one). Equal
# to ``fromtimestamp`` for every int (the tests hold it to that); a float keeps
# ``fromtimestamp``, microseconds and all.
_HOUR: Final = 3600
# A year of hours, ~1 MB, cleared when full. Many projects listed at once
# read their hours interleaved, not one span after another: a cache that
# holds less than their common span is cleared over and over (with 4,096: 20
# projects spanning 10 months, listed at once, made 1.5-1.6 x the
# fromtimestamp calls of the same projects listed one after another)
_HOURS_KEPT: Final = 366 * 24
_hour_starts: Final[dict[int, datetime]] = {}
_INTO_HOUR: Final = tuple(timedelta(seconds=s) for s in range(_HOUR))


# field type -> (the test that rejects a JSON value, the lines that convert it
# in place); every name the code uses is bound as a default argument: a local
# lookup
_FAST_FIELDS: Final[dict[object, tuple[str, tuple[str, ...]]]] = {
    str: ("_type({v}) is not _str", ()),
    int: ("_type({v}) is not _int", ()),
    datetime: (
        "(_type({v}) is not _int and _type({v}) is not _float)",
        # inline: a call per value would cost what remembering saves
        (
            "if _type({v}) is _int:",
            "    _hour, _into = _divmod({v}, _HOUR)",
            "    _start = _hour_starts_get(_hour)",
            "    if _start is not None:",
            "        {v} = _start + _INTO_HOUR[_into]",
            "    else:  # may raise: out of range",
            "        {v} = _from_timestamp({v}, _UTC)",
            "        if _len(_hour_starts) >= _HOURS_KEPT:",
            "            _hour_starts.clear()",
            "        _hour_starts[_hour] = {v} - _INTO_HOUR[_into]",
            "else:",
            "    {v} = _from_timestamp({v}, _UTC)",
        ),
    ),
    # an unknown value stays a str; a try costs nothing until it catches
    JobType | str: (
        "_type({v}) is not _str",
        ("try:", "    {v} = _JOB_TYPES[{v}]", "except KeyError:", "    pass"),
    ),
    JobStatus | str: (
        "_type({v}) is not _str",
        ("try:", "    {v} = _JOB_STATUSES[{v}]", "except KeyError:", "    pass"),
    ),
}


# the generated code's own locals, besides the helpers in its namespace
_LOCALS: Final = frozenset(
    {"o", "_", "_record", "_hour", "_into", "_start", "records", "out", "append"}
)


def _fast_structure_source(cls: type) -> tuple[str, dict[str, Any]]:
    """The body that turns one wire dict ``o`` into ``cls`` (in ``_record``)."""
    fields = attrs.fields(attrs.resolve_types(cls))
    namespace: dict[str, Any] = {
        "_cls": cls,
        "_type": type,
        "_str": str,
        "_int": int,
        "_float": float,
        "_from_timestamp": datetime.fromtimestamp,
        "_UTC": UTC,
        "_HOUR": _HOUR,
        "_INTO_HOUR": _INTO_HOUR,
        "_HOURS_KEPT": _HOURS_KEPT,
        "_hour_starts": _hour_starts,
        "_hour_starts_get": _hour_starts.get,
        "_divmod": divmod,
        "_len": len,
        "_JOB_TYPES": _JOB_TYPES,
        "_JOB_STATUSES": _JOB_STATUSES,
    }
    required = [f.name for f in fields if f.default is attrs.NOTHING]
    if len(required) > 1:  # one C call for every lookup
        namespace["_required"] = itemgetter(*required)
        lines = [f"{', '.join(required)}, = _required(o)"]
    else:  # itemgetter of one name returns the value, not a tuple
        lines = [f"{name} = o[{name!r}]" for name in required]
    checks, converts = [], []
    for field in fields:
        if field.type not in _FAST_FIELDS:
            msg = f"no fast structure for {cls.__name__}.{field.name}: {field.type}"
            raise TypeError(msg)
        check, convert = _FAST_FIELDS[field.type]
        name = field.name
        if name in namespace or name in _LOCALS:
            msg = f"no fast structure for {cls.__name__}.{name}: the name is taken"
            raise TypeError(msg)
        default = field.default
        if default is not attrs.NOTHING:
            # null or missing: the default stands in (Go writes "" as null)
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                if default.takes_self:
                    msg = f"no fast structure for {cls.__name__}.{name}: takes_self"
                    raise TypeError(msg)
                namespace[f"_default_{name}"] = default.factory
                stand_in = f"_default_{name}()"
            else:
                namespace[f"_default_{name}"] = default
                stand_in = f"_default_{name}"
            lines += [
                f"{name} = o.get({name!r})",
                f"if {name} is None:",
                f"    {name} = {stand_in}",
            ]
        checks.append(check.format(v=name))
        converts += [line.format(v=name) for line in convert]
    lines += [
        f"if {' or '.join(checks)}:",
        "    raise TypeError('a field of the wrong JSON type')",
        *converts,
    ]
    building = _building_class(cls)
    if building is not None:
        # A frozen attrs class's __init__ writes each field through
        # object.__setattr__, which costs more than the rest of a record. The
        # same fields are set on a plain object of an identical layout, which
        # then becomes the frozen class: equal, hashable and immutable like
        # any other instance (the tests hold it to that).
        namespace["_Building"] = building
        lines.append("_record = _Building()")
        lines += [f"_record.{f.name} = {f.name}" for f in fields]
        # a plain store: _Building has object's __setattr__ (no call to it)
        lines.append("_record.__class__ = _cls")
    else:
        arguments = ", ".join(f"{f.alias}={f.name}" for f in fields)
        lines.append(f"_record = _cls({arguments})")
    return "\n".join(lines), namespace


def _building_class(cls: type) -> type | None:
    """
    A plain class whose instances can become *cls*'s once their fields are
    set, or None where *cls*'s __init__ does more than store its fields or no
    plain class has its layout (a base class, a ``__weakref__`` slot).
    """
    fields = attrs.fields(cls)
    if (
        cls.__bases__ != (object,)  # a base's __setattr__ or slots
        or hasattr(cls, "__attrs_post_init__")
        or hasattr(cls, "__attrs_pre_init__")
        or any(f.validator or f.converter or not f.init for f in fields)
    ):
        return None
    slots = cls.__dict__.get("__slots__")
    if slots is not None and set(slots) != {f.name for f in fields}:
        return None  # a weakref or cached-hash slot: not only the fields
    namespace = {} if slots is None else {"__slots__": slots}
    building = type(f"_Building{cls.__name__}", (), namespace)
    try:
        building().__class__ = cls  # Python's own check of the two layouts
    except TypeError:
        return None
    return building


def _make_fast_structure(
    cls: type[T],
) -> tuple[Callable[[Any, type], T], Callable[[list[Any]], tuple[T, ...]]]:
    """Generate ``(structure one record, structure a list)`` for *cls*."""
    body, namespace = _fast_structure_source(cls)
    one = "\n    ".join(body.splitlines())
    many = "\n        ".join(body.splitlines())
    # the helpers become default arguments: local lookups in the loop
    bound = ", ".join(f"{name}={name}" for name in namespace)
    source = (
        f"def structure_one(o, _, *, {bound}):\n    {one}\n    return _record\n\n"
        f"def structure_many(records, *, {bound}):\n"
        "    out = []\n"
        "    append = out.append\n"
        "    for o in records:\n"
        f"        {many}\n"
        "        append(_record)\n"
        "    return tuple(out)\n"
    )
    code = compile(source, f"<ief_jobs fast structure {cls.__name__}>", "exec")
    exec(code, namespace)  # noqa: S102 (our own source, built from attrs fields)
    return namespace["structure_one"], namespace["structure_many"]


_structure_job_fast, _structure_jobs_fast = _make_fast_structure(BatchJob)


def _describe(exc: BaseException, type_: type | None) -> str:
    # our hooks' own messages say what was wrong; cattrs' generic ones for the rest
    if isinstance(exc, TypeError | ValueError) and type(exc).__module__ == "builtins":
        text = str(exc)
        if text.startswith(("expected ", "Unix seconds")):
            return text
    return format_exception(exc, type_)


def _tolerate_null(default: Any, hook: Callable[[Any, type], Any]) -> Any:
    def structure(value: Any, type_: type) -> Any:
        return default if value is None else hook(value, type_)

    return structure


def _record_hook(conv: OrjsonConverter, cls: type) -> Callable[[Any, type], Any]:
    # a field with a default takes null as missing: its default stands in
    overrides: dict[str, Any] = {
        field.name: cattrs.override(
            struct_hook=_tolerate_null(
                field.default, conv.get_structure_hook(field.type)
            )
        )
        for field in attrs.fields(attrs.resolve_types(cls))
        if field.default is not attrs.NOTHING
    }
    return make_dict_structure_fn(cls, conv, **overrides)


def make_converter(*, detailed_validation: bool = True) -> OrjsonConverter:
    """
    Build the converter for IEF bodies.

    Unix seconds become aware UTC datetimes, unknown job types and statuses stay
    plain strings, unknown fields are ignored, and text or numbers of the wrong
    JSON type are rejected rather than coerced. A field with a default
    (``description``) takes null or absence as its default, as a Go server
    writes an empty value; every other field is required.
    """
    conv = _make_orjson_converter(detailed_validation=detailed_validation)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(datetime, _from_unix_seconds)
    # Not register_structure_hook(JobType | str, ...): the preconf union
    # passthrough would win over it; a predicate on the exact union does not.
    conv.register_structure_hook_func(lambda t: t == JobType | str, _structure_job_type)
    conv.register_structure_hook_func(lambda t: t == JobStatus | str, _structure_status)
    if detailed_validation:
        conv.register_structure_hook(BatchJob, _record_hook(conv, BatchJob))
    else:
        conv.register_structure_hook(BatchJob, _structure_job_fast)
    structure_jobs = conv.get_structure_hook(tuple[BatchJob, ...])

    def _structure_job_list(value: Any, type_: type) -> tuple[BatchJob, ...]:
        if type(value) is not list:  # a dict or a string is iterable too
            msg = f"expected an array, got {type(value).__name__}"
            raise TypeError(msg)
        if detailed_validation:
            jobs: tuple[BatchJob, ...] = structure_jobs(value, type_)  # notes the index
            return jobs
        return _structure_jobs_fast(value)

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


# The fast path above structures without collecting errors; only a body it
# rejects is structured again, by the detailed converter (built once), to name
# every bad place by path. Good bodies are validated once.
_DETAILED: Final = make_converter()
_explain_wire_page: Final = _DETAILED.get_structure_hook(_WirePage)


def _json_object(body: bytes | str) -> dict[str, Any] | str:
    """The JSON object *body* holds, or the problem that says why it holds none."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if type(data) is not dict:
        return f"expected a JSON object @ $, got {type(data).__name__}"
    return data


def _fast_page(data: dict[str, Any]) -> tuple[int, tuple[BatchJob, ...] | None]:
    """``(job_count, jobs)`` of a body; jobs is None where null or missing."""
    count = data["job_count"]
    if type(count) is not int or count < 0:
        raise TypeError(count)  # the detailed converter explains it
    records = data.get("jobs")
    if records is None:
        return count, None
    if type(records) is not list:
        raise TypeError(records)
    return count, _structure_jobs_fast(records)


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

    The compiled path, where active (`decoder_name`), decodes it first; a body it
    refuses is decoded by the pure path, which gives the same records or the
    error.

    Example::

        page = decode_page(b'{"job_count": 0, "jobs": []}', project_id="p1", offset=0)
        assert page.jobs == ()

    Raises:
        DecodeError: The body is not JSON, or not the documented shape; its
            *problems* name each bad place by path (``$.jobs[3].created_at``).
    """
    page = decode_page_unbuilt(
        body, project_id=project_id, offset=offset, request_id=request_id
    )
    return page if isinstance(page, JobPage) else page.build()


class UnbuiltPage:
    """
    A list body decoded and checked on the compiled path, its records not built
    yet: `build` gives the `JobPage` that `decode_page` would have given.

    A walk holds the pages it sent ahead until it reaches them; with telemetry
    on (which decodes each body on arrival) the records of each are built then,
    when the consumer is about to take them. Built on arrival, they would wait in
    the garbage collector's young generations, walked by every collection.
    """

    __slots__ = ("_jobs", "job_count", "offset", "project_id", "request_id")

    def __init__(
        self,
        job_count: int,
        jobs: Any,  # _compiled.UnbuiltJobs: the module needs the `fast` extra
        project_id: str,
        offset: int,
        request_id: str | None,
    ) -> None:
        self.job_count = job_count
        self._jobs = jobs
        self.project_id = project_id
        self.offset = offset
        self.request_id = request_id

    @property
    def records(self) -> int:
        """How many records the page holds."""
        return len(self._jobs)

    def build(self) -> JobPage:
        """The page with its records, built now."""
        return JobPage(
            project_id=self.project_id,
            offset=self.offset,
            job_count=self.job_count,
            jobs=self._jobs.build(),
            request_id=self.request_id,
        )


def decode_page_unbuilt(
    body: bytes | str,
    *,
    project_id: str,
    offset: int,
    request_id: str | None = None,
) -> JobPage | UnbuiltPage:
    """
    `decode_page`, but a page the compiled path decodes comes back as an
    `UnbuiltPage`: checked, its records built only when its `build` is called.

    Raises:
        DecodeError: As `decode_page`: everything that can refuse a body runs here.
    """
    compiled = _compiled
    if compiled is not None:
        try:
            count, unbuilt = _decode_compiled_page(body)
        except compiled.REFUSED:
            pass
        else:
            if unbuilt is None:  # an empty page, or the error it is
                return _page(count, None, project_id, offset, request_id)
            return UnbuiltPage(count, unbuilt, project_id, offset, request_id)
    return _decode_pure_page(body, project_id, offset, request_id)


def _decode_pure_page(
    body: bytes | str, project_id: str, offset: int, request_id: str | None
) -> JobPage:
    data = _json_object(body)
    if isinstance(data, str):
        raise DecodeError(
            problems=(data,),
            project_id=project_id,
            offset=offset,
            request_id=request_id,
        )
    try:
        count, jobs = _fast_page(data)
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
    return _page(count, jobs, project_id, offset, request_id)


def _page(
    count: int,
    jobs: tuple[BatchJob, ...] | None,
    project_id: str,
    offset: int,
    request_id: str | None,
) -> JobPage:
    if jobs is None:
        # Go writes an empty slice as null (or leaves it out): an empty page
        # where no record is due; where records are due the answer was cut
        # short, and a listing is never silently short
        if offset < count:
            problem = (
                f"no jobs (null or missing) where job_count {count} says records "
                f"are due from offset {offset} @ $.jobs"
            )
            raise DecodeError(
                problems=(problem,),
                project_id=project_id,
                offset=offset,
                request_id=request_id,
            )
        jobs = ()
    return JobPage(
        project_id=project_id,
        offset=offset,
        job_count=count,
        jobs=jobs,
        request_id=request_id,
    )


# -- ShowBatchJob: one job, one request; not a hot path, so the detailed
# converter alone, which names every bad place by path.


def _strict_array(conv: OrjsonConverter, item: type) -> None:
    # cattrs would take any iterable for a tuple: a dict or a string too
    array = tuple[item, ...]  # type: ignore[valid-type]
    structure_items = conv.get_structure_hook(array)

    def structure(value: Any, type_: type) -> tuple[Any, ...]:
        if type(value) is not list:
            msg = f"expected an array, got {type(value).__name__}"
            raise TypeError(msg)
        items: tuple[Any, ...] = structure_items(value, type_)  # notes the index
        return items

    # a predicate: a generic alias is not a class singledispatch takes
    conv.register_structure_hook_func(lambda t: t == array, structure)


def _make_detail_converter() -> OrjsonConverter:
    # inner classes first: a record's hook takes its fields' hooks when built
    conv = make_converter()
    for cls in (ExtensionInfo, JobTask, JobTarget):
        conv.register_structure_hook(cls, _record_hook(conv, cls))
        _strict_array(conv, cls)
    conv.register_structure_hook(BatchJobDetail, _record_hook(conv, BatchJobDetail))
    return conv


_structure_detail: Final = _make_detail_converter().get_structure_hook(BatchJobDetail)


def decode_job_detail(
    body: bytes | str,
    *,
    project_id: str,
    job_id: str,
    request_id: str | None = None,
) -> BatchJobDetail:
    """
    Decode one response body of ShowBatchJob into a `BatchJobDetail`.

    Strict as `decode_page` is, and tolerant in the same places: a null or
    missing ``description``, ``task_data``, ``reason``, ``extension_info``,
    ``tasks`` or ``targets`` is empty (Go writes empty slices as null).

    Example::

        detail = decode_job_detail(body, project_id="p1", job_id=job_id)
        print(detail.status, [task.status for task in detail.tasks])

    Raises:
        DecodeError: The body is not JSON, or not the documented shape; its
            *problems* name each bad place by path (``$.tasks[3].created_at``)
            and the first says which job was asked for.
    """

    def error(*problems: str) -> DecodeError:
        return DecodeError(
            problems=(f"job {job_id}", *problems),
            project_id=project_id,
            request_id=request_id,
            answer="job detail",
        )

    compiled = _compiled
    if compiled is not None:
        try:
            return compiled.decode_job_detail(body)  # type: ignore[no-any-return]
        except compiled.REFUSED:
            pass
    data = _json_object(body)
    if isinstance(data, str):
        raise error(data)
    try:
        detail: BatchJobDetail = _structure_detail(data, BatchJobDetail)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise error(*cattrs.transform_error(exc, format_exception=_describe)) from None
    return detail


# -- which path decodes ------------------------------------------------------

DECODER_ENV: Final = "IEF_JOBS_DECODER"


def _load_compiled(choice: str | None) -> ModuleType | None:
    """The compiled path's module, or None: forced pure, or msgspec missing."""
    if choice == "pure":
        return None
    try:
        from . import _compiled as compiled  # noqa: PLC0415 (the `fast` extra)
    except ImportError:
        return None
    return compiled


@functools.cache
def _page_decoder(compiled: ModuleType) -> Callable[[bytes | str], Any]:
    # generated once: tests and benchmarks switch paths around every run
    decoder: Callable[[bytes | str], Any] = compiled.make_page_decoder(_BUILDING_JOB)
    return decoder


def _use(compiled: ModuleType | None) -> None:
    """Make *compiled* (None: the pure path) the active path; for tests, benchmarks."""
    global _compiled, _decode_compiled_page  # noqa: PLW0603 (one switch, here)
    _compiled = compiled
    _decode_compiled_page = None if compiled is None else _page_decoder(compiled)


def decoder_name() -> str:
    """
    Which path decodes bodies: ``"msgspec"`` (the ``fast`` extra) or ``"pure"``.

    The compiled path is taken wherever msgspec is installed, unless the
    environment says ``IEF_JOBS_DECODER=pure`` when ief_jobs is imported; either
    way the records and errors are the same.

    Example::

        import ief_jobs
        print(ief_jobs.decoder_name())  # "msgspec" after pip install "ief-jobs[fast]"
    """
    return "pure" if _compiled is None else "msgspec"


_BUILDING_JOB: Final = _building_class(BatchJob)
_compiled: ModuleType | None = None
_decode_compiled_page: Any = None
_use(_load_compiled(os.environ.get(DECODER_ENV)))
