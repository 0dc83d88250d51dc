"""
Every error ief-jobs raises:

* IefError: *project_id*, *offset* (where a walk stopped: resume with ``offset=``)
  and *attempts* (requests made for that page)
  * ApiError: IEF answered 4xx/5xx (status, error_code, error_msg, request_id)
    * AuthenticationError: 401/403, and IEF's 400 IEF.011005
    * NotFoundError: 404
    * ThrottledError: 429 (retry_after, in seconds, or None)
    * ServerError: 5xx
  * TransportError: no usable answer (connection failed or reset, timed out, a
    body cut short or too large)
  * DecodeError: the answer is not the documented JSON (problems, each with its
    path, such as ``$.jobs[3].created_at``)

No message or ``repr`` carries a token, a secret key or a signature: errors
hold what the server said and where the walk was, never the request's headers.

Nothing here imports from the rest of the package; `error_from_response` is the
one place that turns an error answer into one of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Final

import attrs
import orjson


@attrs.define(kw_only=True, eq=False)
class IefError(Exception):
    """Base of every error ief-jobs raises."""

    project_id: str | None = None
    offset: int | None = None
    attempts: int = 1

    def _where(self) -> str:
        parts = []
        if self.project_id is not None:
            parts.append(f"project {self.project_id}")
        if self.offset is not None:
            parts.append(f"offset {self.offset}")
        if self.attempts > 1:
            parts.append(f"after {self.attempts} attempts")
        return f" ({', '.join(parts)})" if parts else ""


@attrs.define(kw_only=True, eq=False)
class ApiError(IefError):
    """IEF (or a gateway in front of it) answered with an error status."""

    status: int
    error_code: str | None = None
    error_msg: str | None = None
    request_id: str | None = None

    def __str__(self) -> str:
        code = f" {self.error_code}" if self.error_code else ""
        msg = f": {self.error_msg}" if self.error_msg else ""
        where = self._where()
        request = f" [request {self.request_id}]" if self.request_id else ""
        return f"HTTP {self.status}{code}{msg}{where}{request}"


@attrs.define(kw_only=True, eq=False)
class AuthenticationError(ApiError):
    """The credentials were refused: 401/403, or IEF's 400 ``IEF.011005``."""


@attrs.define(kw_only=True, eq=False)
class NotFoundError(ApiError):
    """404: the API or the project was not found (check the endpoint)."""


@attrs.define(kw_only=True, eq=False)
class ThrottledError(ApiError):
    """429: the gateway's rate limit was reached."""

    retry_after: float | None = None  # seconds, from Retry-After when present


@attrs.define(kw_only=True, eq=False)
class ServerError(ApiError):
    """5xx: the server failed; 502, 503 and 504 are usually temporary."""


@attrs.define(kw_only=True, eq=False)
class TransportError(IefError):
    """
    No usable answer: the connection failed or broke, or a timeout ran out.

    *retryable* is False where another attempt would meet the same wall: a
    body over ``max_body_size``, a TLS certificate that does not verify.
    """

    reason: str
    retryable: bool = True

    def __str__(self) -> str:
        return f"{self.reason}{self._where()}"


@attrs.define(kw_only=True, eq=False)
class DecodeError(IefError):
    """The body is not the documented JSON; *problems* say where, by path."""

    problems: tuple[str, ...]
    request_id: str | None = None

    def __str__(self) -> str:
        request = f" [request {self.request_id}]" if self.request_id else ""
        return f"undecodable page{self._where()}{request}: {'; '.join(self.problems)}"


_RETRY_AFTER_MAX: Final = 3600.0  # a server asking for more than an hour is lying


def parse_retry_after(
    value: str | None, *, now: datetime | None = None
) -> float | None:
    """
    Read ``Retry-After`` as seconds from *now*: delta-seconds or an HTTP date.

    A value that is neither, or in the past, gives ``None`` or ``0.0``; a very
    long one is capped at an hour.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN  # noqa: PLR0124
        return None
    return min(max(seconds, 0.0), _RETRY_AFTER_MAX)


def error_from_response(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    project_id: str | None = None,
    offset: int | None = None,
    now: datetime | None = None,
) -> ApiError:
    """
    Map one error answer to the right `ApiError`, the one place that does.

    Reads ``error_code``/``error_msg`` from a JSON body, and falls back to the
    (shortened) raw text for an HTML or empty body, as a load balancer sends.
    """
    error_code, error_msg, request_id = _read_error_body(body)
    request_id = headers.get("X-Request-Id") or request_id
    error = _error_class(status, error_code)(
        status=status,
        error_code=error_code,
        error_msg=error_msg,
        request_id=request_id,
        project_id=project_id,
        offset=offset,
    )
    if isinstance(error, ThrottledError):
        error.retry_after = parse_retry_after(headers.get("Retry-After"), now=now)
    return error


def _error_class(status: int, error_code: str | None) -> type[ApiError]:
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        return ThrottledError
    if status in _AUTH_STATUSES or error_code in _AUTH_CODES:
        return AuthenticationError
    if status == HTTPStatus.NOT_FOUND:
        return NotFoundError
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return ServerError
    return ApiError


_AUTH_STATUSES: Final = frozenset({HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN})
_AUTH_CODES: Final = frozenset({"IEF.011005"})
_RAW_TEXT_MAX: Final = 200  # enough to recognise an HTML error page, not to flood logs


def _read_error_body(body: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        code, msg, request_id = (
            data.get("error_code"),
            data.get("error_msg"),
            data.get("request_id"),
        )
        return (
            code if isinstance(code, str) else None,
            msg if isinstance(msg, str) else None,
            request_id if isinstance(request_id, str) else None,
        )
    text = " ".join(body[:_RAW_TEXT_MAX].decode("utf-8", "replace").split())
    return None, text or None, None
