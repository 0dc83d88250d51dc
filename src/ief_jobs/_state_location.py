"""
Where a watch keeps its state, parsed from text (``--state``, ``IEF_JOBS_STATE``).

``redis://``, ``rediss://`` and ``unix://``, in any letter case (URL schemes
are case-insensitive), name a Redis; a plain path names a SQLite file. Any
other ``scheme:`` prefix (``redis+sentinel://``, ``redis:host:6379``,
``http://``) is refused rather than taken for a file name: shards meant to
share a Redis must not each keep a private file. A refusal names the scheme
and nothing after it, where a password may be.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import attrs

__all__ = ["StateLocation", "parse_state_location"]

_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")  # RFC 3986's
_REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})


@attrs.frozen
class StateLocation:
    """
    A parsed state location: a Redis URL (scheme in lower case) or a file path.

    Its ``repr`` shows the kind only: a URL may hold a password.
    """

    kind: Literal["redis", "sqlite"]
    target: str = attrs.field(repr=False)


def parse_state_location(text: str) -> StateLocation:
    """
    Read *text* as a Redis URL or a SQLite file path; refuse anything else.

    Example::

        assert "redis" == parse_state_location("Redis://:pw@host:6379/0").kind
        assert "sqlite" == parse_state_location("./a:b").kind

    Raises:
        TypeError: *text* is not a str.
        ValueError: Empty, or a scheme that is not Redis's (named alone), or
            a Redis scheme without ``//``.
    """
    if not isinstance(text, str):
        msg = f"a state location must be a str, not {type(text).__name__}"
        raise TypeError(msg)
    stripped = text.strip()
    if not stripped:
        msg = "the state location is empty: give a file path or a redis:// URL"
        raise ValueError(msg)
    found = _SCHEME.match(stripped)
    if found is None:
        if "://" in stripped:  # " redis://..." or "x/redis://...": a URL, mistyped
            msg = (
                "the state location looks like a URL but does not start with "
                "redis://, rediss:// or unix://"
            )
            raise ValueError(msg)
        return StateLocation("sqlite", text)
    scheme = found.group(1)
    rest = stripped[found.end() :]
    if scheme.lower() in _REDIS_SCHEMES and rest.startswith("//"):
        return StateLocation("redis", f"{scheme.lower()}:{rest}")
    if scheme.lower() in _REDIS_SCHEMES:
        msg = f"a {scheme.lower()}:// state URL needs '//' after '{scheme}:'"
    else:
        msg = (
            f"unsupported state scheme '{scheme}:': give a redis://, rediss:// "
            "or unix:// URL, or a file path (./NAME for a file whose name has ':')"
        )
    raise ValueError(msg)
