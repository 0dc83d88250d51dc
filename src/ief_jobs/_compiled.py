"""
The compiled decoding path (the ``fast`` extra): msgspec checks JSON types in C.

Importing this module needs msgspec; `ief_jobs.codec` imports it only when it is
installed, and hands it every body first. This path accepts a subset of what the
pure path accepts and builds the very same records from it; anything it refuses
(an error of *REFUSED*) is decoded again by the pure path, which gives the answer
or the error, so there is one set of tolerance rules and one set of messages.

It refuses, to stay exactly the pure path's equal:

* any field this version does not know, on a page or a record: msgspec skips
  unknown values without checking them as orjson does (a number too large for a
  double, nesting past orjson's depth limit), so it does not skip them at all;
* integers outside int64 (orjson reads up to uint64 as ints, larger as floats);
* times that are not integer seconds in the years 1 to 9999 (a float's
  microseconds may round differently).

A job type or status this version does not know is only a string to msgspec: it
stays on this path and is kept as a plain ``str``, as the pure path keeps it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from itertools import chain
from operator import attrgetter
from typing import Annotated, Any, Final, get_args, get_origin

import attrs
import msgspec

from .models import BatchJob, BatchJobDetail, JobStatus, JobType

__all__ = [
    "REFUSED",
    "VERSION",
    "UnbuiltJobs",
    "decode_job_detail",
    "make_page_decoder",
]

VERSION: Final = msgspec.__version__

# msgspec's own errors (ValidationError is one), its depth guard, and text that
# is no UTF-8 (a str body with a lone surrogate; a bad key, in msgspec < 0.19)
REFUSED: Final = (msgspec.DecodeError, RecursionError, UnicodeError)

_INT64: Final = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_COUNT: Final = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_ENUMS: Final[dict[object, dict[str, Any]]] = {
    JobType | str: {t.value: t for t in JobType},
    JobStatus | str: {s.value: s for s in JobStatus},
}
_DATETIMES: Final = list[datetime]


def _wire_type(type_: Any) -> Any:
    """What msgspec decodes for an attrs field of *type_*: JSON types only."""
    if type_ is str or type_ in _ENUMS:  # an unknown value is a str, kept
        return str
    if type_ is int or type_ is datetime:  # times: integer Unix seconds
        return _INT64
    if get_origin(type_) is tuple and get_args(type_)[1:] == (Ellipsis,):
        return list[wire_struct(get_args(type_)[0])]  # type: ignore[misc]
    msg = f"no compiled decoding for {type_}"
    raise TypeError(msg)


@functools.cache
def wire_struct(cls: type) -> type[msgspec.Struct]:
    """
    A msgspec Struct of *cls*'s attrs fields in their JSON types, generated once.

    A field with a default takes null as well (its default stands in, as a Go
    server writes an empty value as null); every other field is required.
    """
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field in attrs.fields(attrs.resolve_types(cls)):
        wire = _wire_type(field.type)
        if field.default is attrs.NOTHING:
            fields.append((field.name, wire))
        else:
            fields.append((field.name, wire | None, None))
    return msgspec.defstruct(
        f"_Wire{cls.__name__}",
        fields,
        kw_only=True,  # required fields may follow defaulted ones
        forbid_unknown_fields=True,
        gc=False,  # decoded JSON holds no cycles
    )


def _default_of(field: attrs.Attribute[Any]) -> Any:
    default: Any = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return default.factory()
    return default


# -- listing: one generated loop per page -------------------------------------


BuildJobs = Callable[[list[Any], list[datetime] | None], tuple[BatchJob, ...]]
"""``build(structs, times=None)``: a page's records; *times* as `_times_converter`
gives them, converted here when None."""


class UnbuiltJobs:
    """
    A page's records as msgspec decoded and checked them, their times already
    converted (what may still be refused was refused): `build` makes the records.

    The wire structs are not tracked by the garbage collector; the records are.
    A walk holds pages sent ahead until it reaches them, so it builds them then:
    records built on arrival would wait in the young generations, walked by each
    collection meanwhile.
    """

    __slots__ = ("_build", "_structs", "_times")

    def __init__(
        self,
        structs: list[Any],
        times: list[datetime] | None,
        build: BuildJobs,
    ) -> None:
        self._structs = structs
        self._times = times
        self._build = build

    def __len__(self) -> int:
        return len(self._structs)

    def build(self) -> tuple[BatchJob, ...]:
        """The records, built now (each call builds them anew)."""
        return self._build(self._structs, self._times)


def make_page_decoder(
    building: type | None,
) -> Callable[[bytes | str], tuple[int, UnbuiltJobs | None]]:
    """
    Generate ``decode(body) -> (job_count, jobs or None)`` for list bodies.

    *building* is a plain class whose instances may become `BatchJob`s once their
    fields are set (the pure path's trick, ``codec._building_class``), or None to
    call ``BatchJob(...)``. ``jobs`` is None where the body's is null or missing,
    else an `UnbuiltJobs`: everything that can refuse the body has run.
    """
    page = msgspec.defstruct(
        "_WirePage",
        [
            ("job_count", _COUNT),
            ("jobs", _wire_type(tuple[BatchJob, ...]) | None, None),
        ],
        forbid_unknown_fields=True,
    )
    decoder = msgspec.json.Decoder(page)
    build_jobs = _jobs_builder(BatchJob, building)
    convert_times = _times_converter(BatchJob)

    def decode(body: bytes | str) -> tuple[int, UnbuiltJobs | None]:
        wire: Any = decoder.decode(body)
        jobs = wire.jobs
        if jobs is None:
            return wire.job_count, None
        return wire.job_count, UnbuiltJobs(jobs, convert_times(jobs), build_jobs)

    return decode


def _field_source(
    field: attrs.Attribute[Any], value: str, namespace: dict[str, Any]
) -> tuple[list[str], str]:
    """``(lines before, expression)`` for one field's value, read from *value*."""
    name, lines = field.name, []
    default: Any = field.default
    if default is not attrs.NOTHING:
        # null or missing: the default stands in (a factory's made afresh)
        lines.append(f"_{name} = {value}")
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            namespace[f"_default_{name}"] = default.factory
            stand_in = f"_default_{name}()"
        else:
            namespace[f"_default_{name}"] = default
            stand_in = f"_default_{name}"
        value = f"_{name}"
        lines += [f"if {value} is None:", f"    {value} = {stand_in}"]
    if field.type in _ENUMS:  # a member where one matches, else the str
        namespace[f"_members_{name}"] = _ENUMS[field.type].get
        lines.append(f"_{name} = {value}")
        value = f"_members_{name}(_{name}, _{name})"
    return lines, value


def _time_fields(cls: type) -> list[str]:
    return [
        f.name for f in attrs.fields(attrs.resolve_types(cls)) if f.type is datetime
    ]


def _times_converter(cls: type) -> Callable[[list[Any]], list[datetime] | None]:
    """
    ``convert(structs)``: every time of a page's wire structs, record after
    record in field order, converted by one msgspec call, not one call each
    (None for a class with no time). It refuses a time out of range.
    """
    times = _time_fields(cls)
    if not times:
        return lambda _structs: None
    times_of = attrgetter(*times)  # one value, or a tuple of them
    flatten = chain.from_iterable if len(times) > 1 else iter

    def convert(structs: list[Any]) -> list[datetime]:
        values = list(flatten(map(times_of, structs)))
        converted: list[datetime] = msgspec.convert(values, _DATETIMES, strict=False)
        return converted

    return convert


def _jobs_builder(cls: type[BatchJob], building: type | None) -> BuildJobs:
    """
    Generate the loop that turns a page's wire structs into *cls* records: a
    store per field, in a loop generated from the attrs fields.
    """
    fields = attrs.fields(attrs.resolve_types(cls))
    times = _time_fields(cls)
    namespace: dict[str, Any] = {
        "_cls": cls,
        "_Building": building,
        "_convert_times": _times_converter(cls),
        "_iter": iter,
        "_tuple": tuple,
        "_zip": zip,
    }
    lines = ["_r = _Building()"] if building is not None else []
    values = {}
    taken = {*namespace, "s", "out", "append", "structs", "times", "_r", "_times"}
    for field in fields:
        if f"_{field.name}" in taken or field.name.startswith("_t"):
            msg = f"no compiled decoding for {cls.__name__}.{field.name}: name taken"
            raise TypeError(msg)
        if field.name in times:
            before: list[str] = []
            value = f"_t{times.index(field.name)}"
        else:
            before, value = _field_source(field, f"s.{field.name}", namespace)
        if building is not None:  # see codec._building_class
            lines += [*before, f"_r.{field.name} = {value}"]
        else:
            lines += before
            values[field.alias] = value
    if building is not None:
        lines.append("_r.__class__ = _cls")
    else:
        arguments = ", ".join(f"{alias}={value}" for alias, value in values.items())
        lines.append(f"_r = _cls({arguments})")
    body = "\n        ".join(lines)
    # the helpers become default arguments: local lookups in the loop
    bound = ", ".join(f"{name}={name}" for name in namespace)
    if times:  # each record takes its times, in field order, from one iterator
        targets = "".join(f", _t{i}" for i in range(len(times)))
        loop = (
            "    if times is None:\n"
            "        times = _convert_times(structs)\n"
            "    _times = _iter(times)\n"
            f"    for s{targets} in _zip(structs{', _times' * len(times)}):\n"
        )
    else:
        loop = "    for s in structs:\n"
    source = (
        f"def build(structs, times=None, *, {bound}):\n"
        "    out = []\n"
        "    append = out.append\n"
        f"{loop}"
        f"        {body}\n"
        "        append(_r)\n"
        "    return _tuple(out)\n"
    )
    code = compile(source, f"<ief_jobs compiled build {cls.__name__}>", "exec")
    exec(code, namespace)  # noqa: S102 (our own source, built from attrs fields)
    built: BuildJobs = namespace["build"]
    return built


# -- ShowBatchJob: one record a request; plain closures are fast enough ---------


def _to_datetime(value: int) -> datetime:
    # strict=False: integer seconds (already checked) become an aware UTC time
    converted: datetime = msgspec.convert(value, datetime, strict=False)
    return converted


def _value_builder(type_: Any) -> Callable[[Any], Any] | None:
    """How a wire value of a field of *type_* becomes the record's (None: as is)."""
    if type_ is datetime:
        return _to_datetime
    if type_ in _ENUMS:
        members = _ENUMS[type_].get
        return lambda value: members(value, value)
    if get_origin(type_) is tuple:
        item = _record_builder(get_args(type_)[0])
        return lambda values: tuple(map(item, values))
    return None


@functools.cache
def _record_builder(cls: type) -> Callable[[Any], Any]:
    """``build(struct) -> cls``: each field converted, through ``cls(...)``."""
    steps = [
        (
            field.name,
            field.alias,
            _value_builder(field.type),
            field.default is not attrs.NOTHING,
            field,
        )
        for field in attrs.fields(attrs.resolve_types(cls))
    ]

    def build(struct: Any) -> Any:
        arguments = {}
        for name, alias, convert, optional, field in steps:
            value = getattr(struct, name)
            if optional and value is None:
                value = _default_of(field)
            elif convert is not None:
                value = convert(value)
            arguments[alias] = value
        return cls(**arguments)

    return build


_detail_decoder: Final = msgspec.json.Decoder(wire_struct(BatchJobDetail))
_build_detail: Final = _record_builder(BatchJobDetail)


def decode_job_detail(body: bytes | str) -> BatchJobDetail:
    """Decode a ShowBatchJob body, or raise one of *REFUSED*."""
    detail: BatchJobDetail = _build_detail(_detail_decoder.decode(body))
    return detail
