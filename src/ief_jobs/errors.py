"""
Every error ief-jobs raises:

* IefError: *project_id*, *offset* (where a walk stopped: resume with ``offset=``)
  and *attempts* (requests made for that page)
  * ApiError: IEF answered 3xx/4xx/5xx (status, error_code, error_msg,
    request_id; location, for a redirect, which is never followed)
    * AuthenticationError: 401/403, and IEF's 400 IEF.011005
    * NotFoundError: 404
    * ThrottledError: 429 (retry_after, in seconds, or None)
    * ServerError: 5xx (retry_after, in seconds, or None)
  * TransportError: no usable answer (connection failed or reset, timed out, a
    body cut short or too large)
  * DecodeError: the answer is not the documented JSON (problems, each with its
    path, such as ``$.jobs[3].created_at``)
  * ListingMovedError: records moved so far while listing that the walk lost
    its place (reason); resume from *offset*, or list again
  * StateError: a watch's state cannot be used: damaged, another
    application's, kept for other settings, or owned by a live watcher (reason)

No message or ``repr`` carries a token, a secret key or a signature: errors
hold what the server said and where the walk was, never the request's headers.
What the server said is masked (`mask_text`: every credential the client holds
or sent becomes ``***``, even when a hostile server echoes one back) and kept to
4 KiB per field (message, code, request id, ``Location``).

Every error pickles and copies with its type, message and fields (and its
notes), so it survives multiprocessing, `concurrent.futures` process pools and
task queues; like any exception's, its traceback and cause stay behind.

Nothing here imports from the rest of the package; `error_from_response` is the
one place that turns an error answer into one of these.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Final, TypeVar, overload
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import attrs
import orjson
from yarl import URL


@attrs.define(kw_only=True, eq=False)
class IefError(Exception):
    """Base of every error ief-jobs raises."""

    project_id: str | None = None
    offset: int | None = None
    attempts: int = 1

    def __reduce__(self) -> tuple[object, ...]:
        # BaseException's own reduce calls cls(*args), which keyword-only fields
        # refuse; rebuild from the fields as they are now (attempts, offset and
        # project_id are filled in after construction)
        fields = {a.name: getattr(self, a.name) for a in attrs.fields(type(self))}
        return _rebuild, (type(self), fields, getattr(self, "__notes__", None))

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
    # a 3xx's Location, without credentials, query or fragment: the client
    # never follows a redirect (it would carry our credentials along)
    location: str | None = None

    def __str__(self) -> str:
        code = f" {self.error_code}" if self.error_code else ""
        msg = f": {self.error_msg}" if self.error_msg else ""
        to = f" (redirect to {self.location}, not followed)" if self.location else ""
        where = self._where()
        request = f" [request {self.request_id}]" if self.request_id else ""
        return f"HTTP {self.status}{code}{msg}{to}{where}{request}"


@attrs.define(kw_only=True, eq=False)
class AuthenticationError(ApiError):
    """
    The credentials were refused: 401/403, or IEF's 400 ``IEF.011005``.

    IEF gives ``IEF.011005`` for a project that does not exist, or that the
    credentials do not cover, as well as for bad credentials: its message says
    so, since a newcomer's first wrong project id reads as a wrong password.
    """

    def __str__(self) -> str:
        text = super().__str__()
        if self.error_code in _AUTH_CODES:
            return f"{text}; {UNKNOWN_PROJECT_HINT}"
        return text


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

    retry_after: float | None = None  # seconds, from Retry-After when present


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
    answer: str = "page"  # what could not be decoded: a page, a job's details

    def __str__(self) -> str:
        request = f" [request {self.request_id}]" if self.request_id else ""
        problems = "; ".join(self.problems)
        return f"undecodable {self.answer}{self._where()}{request}: {problems}"


@attrs.define(kw_only=True, eq=False)
class ListingMovedError(IefError):
    """
    Records moved so much while listing that the walk lost its place, or the
    server's answers leave no way to check that none was skipped.

    None of the records it yielded last could be found again within a bounded
    number of re-reads (a server capping pages at a few records under heavy
    churn); the server serves fewer than three records a request, too few to
    check a page boundary; or more jobs share one ``created_at`` than a
    request brings, in an order that changes on every read. Nothing was
    skipped before *offset*: resume from there, or list again.
    """

    reason: str

    def __str__(self) -> str:
        return f"{self.reason}{self._where()}"


@attrs.define(kw_only=True, eq=False)
class StateError(IefError):
    """
    A watch's state (`SqliteCheckpoint`, `RedisCheckpoint`) cannot be used.

    *reason* names the file or the Redis key (never a password) and what is
    wrong: a damaged record, another application's database, state kept for
    other settings (the endpoint, instance, job type or filter), or another
    live watcher that owns it. Nothing was emitted and nothing written.
    """

    reason: str

    def __str__(self) -> str:
        return self.reason


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
    secrets: Collection[str] = (),
) -> ApiError:
    """
    Map one error answer to the right `ApiError`, the one place that does.

    Reads the code and message from a JSON body in either shape (see
    `read_error_body`), and falls back to the (shortened) raw text for an HTML
    or empty body, as a load balancer sends. A 429's or 5xx's ``Retry-After``
    becomes *retry_after*; a 3xx's ``Location`` becomes *location*. Every
    text the server chose is masked with *secrets* (`mask_text`) and kept to
    4 KiB.
    """
    error_code, error_msg, request_id = read_error_body(body, secrets=secrets)
    request_id = headers.get("X-Request-Id") or request_id
    cls = _error_class(status, error_code)
    location = None
    if _REDIRECT_MIN <= status < _REDIRECT_END:
        # masked before parsing too: yarl re-encodes what it parses
        location = _redirect_target(mask_text(headers.get("Location"), secrets))
    error = cls(
        status=status,
        error_code=error_code,
        error_msg=error_msg,
        request_id=request_id,
        project_id=project_id,
        offset=offset,
        location=location,
    )
    if isinstance(error, ThrottledError | ServerError):
        error.retry_after = parse_retry_after(headers.get("Retry-After"), now=now)
    return redact(error, secrets)


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
UNKNOWN_PROJECT_HINT: Final = (
    "the project may not exist, or the credentials may not cover it"
)
_REDIRECT_MIN: Final = 300
_REDIRECT_END: Final = 400
_RAW_TEXT_MAX: Final = 200  # enough to recognise an HTML error page, not to flood logs
MASK: Final = "***"
SERVER_TEXT_MAX: Final = 4096  # bytes of UTF-8 kept of any one text a server chose

E = TypeVar("E", bound=IefError)


@overload
def mask_text(text: str, secrets: Collection[str]) -> str: ...
@overload
def mask_text(text: None, secrets: Collection[str]) -> None: ...
@overload
def mask_text(text: str | None, secrets: Collection[str]) -> str | None: ...
def mask_text(text: str | None, secrets: Collection[str]) -> str | None:
    """
    *text* with every one of *secrets* replaced by ``***``, and kept to 4 KiB.

    A secret is also found percent-encoded (as a server echoing a URL or a
    form writes it, in any spelling: a text holding ``%`` is read decoded as
    well) and JSON-escaped (as an echo inside a JSON string is);
    longer secrets go first, so one holding another is masked whole. Masking
    comes before the cut: a secret is never cut in two with its first half
    left to read.

    Example::

        assert "token *** refused" == mask_text("token s3cret refused", {"s3cret"})
    """
    if text is None:
        return text
    variants = _variants(secrets)
    text = _masked(text, variants)
    if "%" in text:  # spelled in a percent-encoding of its own (a Location)
        for decode in (unquote, unquote_plus):
            decoded = decode(text)
            if any(secret in decoded for secret in variants):
                text = _masked(decoded, variants)
    return _bounded(text)


def _masked(text: str, variants: list[str]) -> str:
    for secret in variants:
        text = text.replace(secret, MASK)
    return text


def redact(error: E, secrets: Collection[str]) -> E:
    """
    Mask *secrets* in every text field of *error* and keep each to 4 KiB; the
    same error, for ``raise redact(exc, secrets)``.

    Example::

        error = redact(TransportError(reason="token s3cret"), {"s3cret"})
        assert "token ***" == str(error)
    """
    for field in attrs.fields(type(error)):
        value = getattr(error, field.name)
        if isinstance(value, str):
            setattr(error, field.name, mask_text(value, secrets))
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            setattr(error, field.name, tuple(mask_text(v, secrets) for v in value))
    return error


def _variants(secrets: Iterable[str]) -> list[str]:
    found: set[str] = set()
    for secret in secrets:
        if isinstance(secret, str) and secret:
            escaped = orjson.dumps(secret).decode()[1:-1]
            found.update((secret, quote(secret, safe=""), quote_plus(secret), escaped))
            found.add(escaped.replace("/", "\\/"))  # as PHP's and Java's writers do
    return sorted(found, key=len, reverse=True)


def _bounded(text: str) -> str:
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= SERVER_TEXT_MAX:
        return text
    # cut on a character boundary: a partial UTF-8 sequence is dropped
    return encoded[: SERVER_TEXT_MAX - 3].decode("utf-8", "ignore") + "..."


def read_error_body(
    body: bytes, *, secrets: Collection[str] = ()
) -> tuple[str | None, str | None, str | None]:
    """
    ``(code, message, request_id)`` from an error body, the one parser of both.

    IEF and API Gateway answer ``{"error_code": ..., "error_msg": ...,
    "request_id": ...}``; IAM and some gateways ``{"error": {"code": ...,
    "message": ...}}`` (a number as code is kept as its text). Anything else
    gives no code and, as message, the body's first characters with runs of
    whitespace folded (an HTML page from a load balancer), or None if empty.
    Each text is masked with *secrets* first (`mask_text`), then shortened.

    Example::

        assert ("APIGW.0106", "bad", None) == read_error_body(
            b'{"error": {"code": "APIGW.0106", "message": "bad"}}'
        )
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        nested = data.get("error")
        if isinstance(nested, dict):
            code, msg = nested.get("code"), nested.get("message")
            request_id = nested.get("request_id", data.get("request_id"))
        else:
            code, msg = data.get("error_code"), data.get("error_msg")
            request_id = data.get("request_id")
        return (
            mask_text(_text(code), secrets),
            mask_text(_text(msg), secrets),
            mask_text(_text(request_id), secrets),
        )
    # the whole body is masked before it is cut, so no secret is cut in two
    raw = mask_text(body.decode("utf-8", "replace"), secrets)
    text = " ".join(raw[: _RAW_TEXT_MAX * 4].split())[:_RAW_TEXT_MAX]
    return None, text or None, None


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # Keystone-style numeric codes
    return None


def _redirect_target(value: str | None) -> str | None:
    # where a redirect pointed, never what it might carry: a query string can
    # hold a token a hostile server echoes back, and userinfo a password
    if not value:
        return None
    try:
        url = URL(value.strip())
        shown = url.with_user(None).with_query(None).with_fragment(None)
    except (TypeError, ValueError):
        return None
    return str(shown) or None


def _rebuild(
    cls: type[IefError], fields: dict[str, object], notes: list[str] | None
) -> IefError:
    error = cls(**fields)  # type: ignore[arg-type]  # the fields attrs listed
    if notes:
        error.__notes__ = list(notes)
    return error
