"""
The one contract for arguments, in one place: every public constructor and
method checks what it is passed with these, where it is passed.

A wrong type is a `TypeError`, a wrong value a `ValueError`; each message names
the argument (never a credential's value). This module imports nothing from
the rest of the package, so every module may use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = [
    "MAX_PAGE_SIZE",
    "check_callable",
    "check_choice",
    "check_credential",
    "check_flag",
    "check_instance",
    "check_int",
    "check_job_id",
    "check_page_size",
    "check_project_id",
    "check_project_ids",
    "check_seconds",
    "check_text",
    "validator",
]

MAX_PAGE_SIZE: Final = 1000  # IEF's limit on ``limit``
_PLAIN_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)


def _type_error(name: str, wanted: str, value: object) -> TypeError:
    return TypeError(f"{name} must be {wanted}, not {type(value).__name__}")


def check_int(
    name: str, value: object, *, minimum: int, maximum: int | None = None
) -> int:
    """
    *value*, an int from *minimum* to *maximum* (a bool is not an int here).

    Example::

        check_int("concurrency", 8, minimum=1)
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an int", value)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum:,}" if maximum is not None else ""
        msg = f"{name} must be at least {minimum}{upper}, not {value}"
        raise ValueError(msg)
    return value


def check_page_size(name: str, value: object) -> int:
    """*value*, a page size IEF accepts: 1 to 1,000 records a request."""
    return check_int(name, value, minimum=1, maximum=MAX_PAGE_SIZE)


def check_seconds(
    name: str,
    value: object,
    *,
    minimum: float = 0.0,
    maximum: float | None = None,
    above: bool = False,
    unit: str = "seconds",
) -> float:
    """
    *value*, a finite number of *unit*: at least *minimum* (above it, with
    *above*), at most *maximum*. NaN, infinity and ints past any float are
    refused.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(name, f"a number of {unit}", value)
    try:
        number = float(value)
    except OverflowError:  # an int past any float: 10**400
        number = math.inf
    low = number > minimum if above else number >= minimum
    high = maximum is None or number <= maximum
    if not (math.isfinite(number) and low and high):
        bound = f"above {minimum:g}" if above else f"at least {minimum:g}"
        if maximum is not None:
            bound += f" and at most {maximum:g}"
        past = isinstance(value, int) and math.isinf(number)
        shown = "an int past any float" if past else f"{value}"
        msg = f"{name} must be finite and {bound} {unit}, not {shown}"
        raise ValueError(msg)
    return number


def check_flag(name: str, value: object) -> bool:
    """*value*, True or False (not another truthy thing)."""
    if not isinstance(value, bool):
        raise _type_error(name, "True or False", value)
    return value


def check_text(name: str, value: object, *, optional: bool = False) -> str | None:
    """*value*, a non-empty str (or None, with *optional*)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _type_error(name, "a str" + (" or None" if optional else ""), value)
    if not value:
        msg = f"{name} must not be empty"
        raise ValueError(msg)
    return value


def check_credential(name: str, value: object, *, header: bool = True) -> str:
    """
    *value*, a non-empty str fit for a header: printable ASCII with no
    surrounding whitespace (a stray ``\\r`` or space is the usual slip); with
    ``header=False`` (a password in a JSON body) any text. The message names
    *name*, never the value: it may be a secret.
    """
    text = check_text(name, value)
    assert text is not None  # noqa: S101 (not optional)
    if header and (text != text.strip() or "\n" in text or "\r" in text):
        msg = f"{name} must have no surrounding whitespace or line breaks"
        raise ValueError(msg)
    if header and not (text.isascii() and text.isprintable()):
        # a header carries nothing else, and an encoder's error would quote it
        msg = f"{name} must be printable ASCII"
        raise ValueError(msg)
    return text


def _segment(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _type_error(name, "a str", value)
    if not _PLAIN_SEGMENT.fullmatch(value):
        msg = f"{name} must be 1 to 128 letters, digits, '-' or '_', not {value!r}"
        raise ValueError(msg)
    return value


def check_project_id(project_id: object) -> str:
    """Refuse a project id that could change the path: a plain segment only."""
    return _segment("project_id", project_id)


def check_job_id(job_id: object) -> str:
    """Refuse a job id that could change the path: a plain segment only."""
    return _segment("job_id", job_id)


def check_project_ids(project_ids: object) -> list[str]:
    """
    *project_ids*, a collection of project ids, each checked, repeats dropped
    (order kept). A lone string is refused: ``"p1"`` would list ``p`` and ``1``.
    """
    if isinstance(project_ids, str | bytes):
        msg = (
            "project_ids must be a collection of project ids, not a single "
            f"{type(project_ids).__name__} ({project_ids!r}): wrap it in a list"
        )
        raise TypeError(msg)
    if not isinstance(project_ids, Iterable):
        raise _type_error("project_ids", "a collection of project ids", project_ids)
    return [check_project_id(pid) for pid in dict.fromkeys(project_ids)]


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """Refuse a *value* that is not one of *choices* (a `ValueError`)."""
    options = list(choices)
    if value not in options:
        listed = " or ".join(repr(c) for c in options)
        msg = f"{name} must be {listed}, not {value!r}"
        raise ValueError(msg)


def check_instance(
    name: str, value: object, kind: type | tuple[type, ...], wanted: str
) -> None:
    """Refuse a *value* that is not a *kind* (a `TypeError` saying *wanted*)."""
    if not isinstance(value, kind):
        raise _type_error(name, wanted, value)


def check_callable(name: str, value: object) -> None:
    """Refuse a *value* that cannot be called."""
    if not callable(value):
        raise _type_error(name, "callable", value)


def validator(
    check: Callable[..., object], *, optional: bool = False, **options: Any
) -> Callable[[Any, Any, Any], None]:
    """
    An attrs validator running *check* with the attribute's name, so attrs
    classes keep the same contract as plain constructors; with *optional*,
    None passes.

    Example::

        page_size: int = attrs.field(default=100, validator=validator(check_page_size))
    """

    def run(_: Any, attribute: Any, value: Any) -> None:
        if value is not None or not optional:
            check(attribute.name, value, **options)

    return run
