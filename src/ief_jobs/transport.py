"""
One request -> one `JobPage` (or one `BatchJobDetail`): the only module of the
client side that talks aiohttp.

`Transport` owns (or borrows) the aiohttp session and does everything one page
needs: the URL, credentials, the client-wide bound on requests in flight and the
optional rate limit, retries, the bound on body size, and mapping an error answer
to its `IefError`. The public methods (`ief_jobs.client`) build a `ListQuery` and
hand the walks `Transport.page_reader`; the walks know nothing of HTTP.

The hot path is lean on purpose: a page that succeeds first time meets no retry
machinery, and what a walk's requests share (path, fixed query parameters,
headers) is built once per walk, not per request.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Final, TypeVar

import aiohttp
import orjson
from aiolimiter import AsyncLimiter
from yarl import URL

from ._signing import encode_query
from ._telemetry import NO_ATTEMPT, Call, Request, Telemetry
from .auth import Auth, RefreshableAuth, secrets_of
from .codec import decode_job_detail, decode_page, decode_page_unbuilt
from .errors import (
    AuthenticationError,
    DecodeError,
    IefError,
    ThrottledError,
    TransportError,
    error_from_response,
    redact,
)
from .models import BatchJobDetail, JobPage, ListQuery
from .retry import AdaptiveLimiter, RetryPolicy

if TYPE_CHECKING:  # the walks' type of what this builds; no import at run time
    from .listing import FetchOf, FetchPage, ReadPage

__all__ = ["DEFAULT_MAX_BODY_SIZE", "DEFAULT_TIMEOUT", "Transport"]

T = TypeVar("T")

# Per request: connecting should be quick; a page is small, so a minute bounds
# a stuck server. No sock_read: aiohttp arms and re-arms a timer for it on
# every request (two timer handles, ~5% of a small page's cost), and it could
# only end a request that the minute ends anyway.
DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=60, connect=10, sock_connect=10)
DEFAULT_MAX_BODY_SIZE: Final = 32 * 1024 * 1024  # 1,000 records take about 0.3 MB
_CHUNK: Final = 64 * 1024
_ANSWER_HEADERS: Final = ("X-Request-Id", "Retry-After", "Location")
# what an Auth writes that a server must never get to echo into an error
_CREDENTIAL_HEADERS: Final = frozenset(
    {"x-auth-token", "authorization", "x-security-token"}
)
_HEADER_PARTS: Final = re.compile(r"[\s,=]+")
_SECRET_PART_MIN: Final = 16  # a signature, a key id; not "SDK-HMAC-SHA256"'s words


class UndecodedPage:
    """
    A page's body as it arrived, decoded by `build` (`decode_page`): a
    `DecodeError` then is masked with the secrets of the request that brought
    it, as one on arrival would be.
    """

    __slots__ = ("_body", "attempts", "offset", "project_id", "request_id", "secrets")

    def __init__(
        self,
        body: bytes,
        *,
        project_id: str,
        offset: int,
        request_id: str | None,
    ) -> None:
        self._body = body
        self.project_id = project_id
        self.offset = offset
        self.request_id = request_id
        # set by the transport once the answer is in: what to mask in a
        # DecodeError (the request's credentials), the requests it took
        self.secrets: Callable[[], Collection[str]] = frozenset
        self.attempts = 1

    def build(self) -> JobPage:
        """
        The page, decoded now.

        Raises:
            DecodeError: The body is not the documented JSON (secrets masked).
        """
        try:
            return decode_page(
                self._body,
                project_id=self.project_id,
                offset=self.offset,
                request_id=self.request_id,
            )
        except DecodeError as exc:
            exc.attempts = self.attempts
            raise redact(exc, self.secrets()) from exc.__cause__


class _SecretsOf:
    """
    ``secrets_of(sent)``, worked out only if called (it costs ~20 us, a page's
    decode error is rare); its repr shows none of the headers it holds.
    """

    __slots__ = ("_secrets_of", "_sent")

    def __init__(
        self, secrets_of: Callable[[Mapping[str, str]], set[str]], sent: dict[str, str]
    ) -> None:
        self._secrets_of = secrets_of
        self._sent = sent

    def __call__(self) -> set[str]:
        return self._secrets_of(self._sent)

    def __repr__(self) -> str:
        return "<the secrets of one request>"


class Transport:
    """
    Sends the list call: one session, one in-flight bound, one retry policy.

    Not public: `IefClient` builds one and is the only caller. Arguments are as
    `IefClient` documents them.
    """

    __slots__ = (
        "_auth",
        "_base_path",
        "_closed",
        "_endpoint",
        "_instance_id",
        "_max_body_size",
        "_owns_session",
        "_rate_limiter",
        "_retry",
        "_session",
        "_ssl",
        "_timeout",
        "_verify_ssl",
        "adaptive",
        "limiter",
        "requests_sent",
        "telemetry",
    )

    def __init__(
        self,
        endpoint: URL,
        *,
        auth: Auth,
        instance_id: str | None,
        session: aiohttp.ClientSession | None,
        concurrency: int,
        retry: RetryPolicy,
        timeout: aiohttp.ClientTimeout,
        max_body_size: int,
        verify_ssl: bool,
        adaptive: bool,
        rate_limit: float | None,
        telemetry: Telemetry | None = None,
    ) -> None:
        # as str() gives it: a default port dropped, the host lower-cased, so
        # URLs assembled from its parts equal what parsing them whole gives
        self._endpoint = URL(str(endpoint))
        self._base_path = endpoint.path.rstrip("/")
        self._auth = auth
        self._instance_id = instance_id
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._retry = retry
        # Both go with every request as well as to a session we make: aiohttp
        # takes them per call, so a borrowed session cannot loosen them.
        self._timeout = timeout
        self._ssl = _request_ssl(session, verify_ssl=verify_ssl)
        self._max_body_size = max_body_size
        self._verify_ssl = verify_ssl
        self.limiter = AdaptiveLimiter(concurrency)
        # a bucket of one, refilled rate_limit times a second: no bursts
        self._rate_limiter = (
            None if rate_limit is None else AsyncLimiter(1, 1.0 / rate_limit)
        )
        self.adaptive = adaptive
        self.requests_sent = 0
        self.telemetry = telemetry
        if telemetry is not None:
            telemetry.track(self.limiter, self._rate_limiter)

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the session if this transport made it, and the auth's. Idempotent."""
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()
        close_auth = getattr(self._auth, "aclose", None)
        if close_auth is not None:  # IamPasswordAuth's IAM session
            await close_auth()

    def live_telemetry(self) -> Telemetry | None:
        """The telemetry, if anything listens to it now (asked once per walk)."""
        telemetry = self.telemetry
        return telemetry if telemetry is not None and telemetry.live() else None

    def ensure_session(self) -> aiohttp.ClientSession:
        """The session, created on first use unless one was borrowed."""
        if self._closed:
            msg = "this IefClient is closed"
            raise RuntimeError(msg)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                # bodies are bounded by max_body_size; the pool by our own limiter
                connector=aiohttp.TCPConnector(limit=0, ssl=self._verify_ssl),
            )
        return self._session

    # -- one walk's requests --------------------------------------------------

    def page_fetcher(
        self, project_id: str, query: ListQuery, call: Call | None = None
    ) -> FetchPage:
        """
        ``fetch(offset, limit) -> JobPage`` for one project and query, its
        requests traced under *call* (with telemetry on).
        """
        telemetry = self.live_telemetry()
        return self._pages(project_id, query, call, telemetry, decode_page)

    def page_reader(
        self, project_id: str, query: ListQuery, call: Call | None = None
    ) -> ReadPage:
        """
        `page_fetcher` for a walk, which holds the pages it sent ahead until
        it reaches them: each answer is decoded then (`UndecodedPage`), right
        before the consumer takes its records, not on arrival, where its
        records would wait, spread over memory the caches no longer hold, and
        be walked by every garbage collection meanwhile. With telemetry on, a
        body is decoded on arrival, so its request's span tells a body that
        fails to decode; its records are still built later
        (`codec.UnbuiltPage`).
        """
        telemetry = self.live_telemetry()
        if telemetry is None:
            return self._pages(project_id, query, call, None, UndecodedPage)
        return self._pages(project_id, query, call, telemetry, decode_page_unbuilt)

    def _pages(
        self,
        project_id: str,
        query: ListQuery,
        call: Call | None,
        telemetry: Telemetry | None,
        decode: Callable[..., T],
    ) -> FetchOf[T]:
        """
        ``fetch(offset, limit)``, its body turned into a page by *decode*, its
        requests traced by *telemetry* (the live one, asked once per walk).

        What every request of the walk shares is built here, once: the path, the
        query's fixed parameters (encoded by the signer's rules, so what
        `AkSkAuth` signs is byte for byte what goes on the wire) and the headers.
        """
        path = self._endpoint.with_path(
            f"{self._base_path}/v2/{project_id}/productmgr/jobs"
        )
        fixed = []
        if query.job_type is not None:
            fixed.append(("job_type", str(query.job_type)))
        if query.sort is not None:
            fixed.append(("sort", str(query.sort)))
        # names sort as job_type < limit < offset < sort: splice limit and offset in
        before = encode_query(p for p in fixed if p[0] < "limit")
        after = encode_query(p for p in fixed if p[0] > "offset")
        prefix = f"{before}&" if before else ""
        suffix = f"&{after}" if after else ""
        scheme, authority, raw_path = path.scheme, path.raw_authority, path.raw_path
        headers = self._headers(project_id, query.instance_id)

        async def fetch(offset: int, limit: int) -> T:
            # assembled, not parsed: URL(str) costs 6 us a request, build 2
            url = URL.build(
                scheme=scheme,
                authority=authority,
                path=raw_path,
                query_string=f"{prefix}limit={limit}&offset={offset}{suffix}",
                encoded=True,
            )
            trace = None
            if telemetry is not None:
                trace = telemetry.request(call, url, offset, limit)
            return await self.fetch(
                url, headers, project_id, offset, decode, trace=trace
            )

        return fetch

    def _headers(self, project_id: str, instance_id: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Project-Id": project_id}
        instance = instance_id if instance_id is not None else self._instance_id
        if instance is not None:
            headers["ief-instance-id"] = instance
        return headers

    async def get_job(
        self,
        project_id: str,
        job_id: str,
        instance_id: str | None,
        call: Call | None = None,
    ) -> BatchJobDetail:
        """
        ShowBatchJob for one job, as a page is fetched: the same credentials,
        bounds, retries and error mapping. The ids are checked by the caller.
        """
        url = self._endpoint.with_path(
            f"{self._base_path}/v2/{project_id}/productmgr/jobs/{job_id}"
        )

        # called as decode_page is: the project and the (absent) offset go by
        def decode(
            body: bytes, *, request_id: str | None, **_: object
        ) -> BatchJobDetail:
            detail = decode_job_detail(
                body, project_id=project_id, job_id=job_id, request_id=request_id
            )
            # checked here, inside fetch: a DecodeError is masked and cut there
            _check_answer(detail, body, project_id, job_id, request_id)
            return detail

        headers = self._headers(project_id, instance_id)
        telemetry = self.live_telemetry()
        trace = None
        if telemetry is not None:
            trace = telemetry.request(call, url, None, None)
        return await self.fetch(url, headers, project_id, None, decode, trace=trace)

    async def fetch(
        self,
        url: URL,
        headers: dict[str, str],
        project_id: str,
        offset: int | None,
        decode: Callable[..., T],
        *,
        trace: Request | None = None,
    ) -> T:
        """
        One GET with retries, its body turned into a record by *decode*, each
        attempt reported to *trace* (with telemetry on).

        *decode* is called as ``decode(body, project_id=, offset=,
        request_id=)`` (`decode_page` for a page of the list call); *offset* is
        None for a request that is not a page. An error names the project, the
        offset and the attempts made.
        """
        retry = self._retry
        started = retry.clock()
        try:
            return await self._send(
                url, headers, project_id, offset, decode, trace=trace
            )
        except IefError as exc:
            if retry.attempts == 1 or not retry.is_retryable(exc):
                raise
            first_failure = exc
        # only a page that failed pays for the retry machinery
        attempt_number = 1
        try:
            async for attempt in retry.retrying(started=started):
                with attempt:
                    attempt_number = attempt.retry_state.attempt_number
                    if attempt_number == 1:
                        raise first_failure
                    record = await self._send(
                        url, headers, project_id, offset, decode, trace=trace
                    )
                    if isinstance(record, UndecodedPage):  # its error says so
                        record.attempts = attempt_number
                    return record
        except IefError as exc:
            exc.attempts = attempt_number
            raise
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _send(
        self,
        url: URL,
        headers: dict[str, str],
        project_id: str,
        offset: int | None,
        decode: Callable[..., T],
        *,
        trace: Request | None,
    ) -> T:
        session = self.ensure_session()
        limiter = self.limiter
        refreshed = False
        while True:
            sent = headers.copy()  # the auth writes into it
            probe = NO_ATTEMPT if trace is None else trace.attempt()
            ticket = await limiter.acquire()
            try:
                probe.admitted()
                if self._rate_limiter is not None:
                    await self._rate_limiter.acquire()
                    probe.paced()
                # signed last, so X-Sdk-Date is not aged by the wait for a slot
                await self._authorize(url, sent, project_id, offset)
                status, body, answer_headers = await self._request(
                    session, url, sent, project_id, offset
                )
            except BaseException as exc:
                probe.failed(exc)
                raise
            finally:
                limiter.release()
            request_id = answer_headers.get("X-Request-Id")
            if 200 <= status < 300:  # noqa: PLR2004
                if self.adaptive:
                    limiter.succeeded()
                try:
                    record = decode(
                        body,
                        project_id=project_id,
                        offset=offset,
                        request_id=request_id,
                    )
                except DecodeError as exc:  # the request id is the server's text
                    failed = redact(exc, self._secrets(sent))
                    probe.answered(status, len(body), failed)  # error.type on it
                    raise failed from exc.__cause__
                if isinstance(record, UndecodedPage):  # masked as here, later
                    record.secrets = _SecretsOf(self._secrets, sent)
                probe.answered(status, len(body), None)
                probe.decoded(record)
                return record
            error = error_from_response(
                status,
                body,
                answer_headers,
                project_id=project_id,
                offset=offset,
                secrets=self._secrets(sent),
            )
            probe.answered(status, len(body), error)
            if isinstance(error, ThrottledError) and self.adaptive:
                limiter.throttled(ticket)
            if (
                isinstance(error, AuthenticationError)
                and status == 401  # noqa: PLR2004
                and not refreshed
                and isinstance(self._auth, RefreshableAuth)
                and await self._auth.refresh(url, sent)
            ):
                refreshed = True
                continue
            raise error

    def _secrets(self, sent: Mapping[str, str]) -> set[str]:
        """
        What to mask in a server's answer to the request that sent *sent*: the
        auth's secrets, and every credential header as sent (an `Auth` of a
        user's own may not say what it holds), whole and in its parts.
        """
        found = set(secrets_of(self._auth))
        for name, value in sent.items():
            if name.lower() in _CREDENTIAL_HEADERS and value:
                found.add(value)
                # a server may echo the signature alone
                parts = _HEADER_PARTS.split(value)
                found.update(p for p in parts if len(p) >= _SECRET_PART_MIN)
        return found

    async def _authorize(
        self, url: URL, headers: dict[str, str], project_id: str, offset: int | None
    ) -> None:
        try:
            await self._auth.apply("GET", url, headers)
        except IefError as exc:  # an IAM failure: say which page it stopped
            exc.project_id = exc.project_id or project_id
            exc.offset = offset if exc.offset is None else exc.offset
            raise

    async def _request(
        self,
        session: aiohttp.ClientSession,
        url: URL,
        headers: dict[str, str],
        project_id: str,
        offset: int | None,
    ) -> tuple[int, bytes, dict[str, str]]:
        self.requests_sent += 1
        try:
            # a redirect would carry our credentials wherever it points: never follow
            async with session.get(
                url,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
                ssl=self._ssl,
            ) as response:
                body = await self._read_body(response, project_id, offset)
                found = response.headers
                answer_headers = {
                    name: found[name] for name in _ANSWER_HEADERS if name in found
                }
                return response.status, body, answer_headers
        except TimeoutError:
            raise TransportError(
                reason="timed out", project_id=project_id, offset=offset
            ) from None
        except aiohttp.ClientError as exc:
            # not chained: aiohttp's errors can hold the request, headers included
            raise TransportError(
                reason=_describe_client_error(exc),
                project_id=project_id,
                offset=offset,
                retryable=not isinstance(exc, _NOT_RETRYABLE),
            ) from None

    async def _read_body(
        self, response: aiohttp.ClientResponse, project_id: str, offset: int | None
    ) -> bytes:
        limit = self._max_body_size
        length = response.content_length
        if length is not None and length > limit:
            raise TransportError(
                reason=f"response body of {length} bytes exceeds max_body_size {limit}",
                project_id=project_id,
                offset=offset,
                retryable=False,
            )
        if length is not None and "Content-Encoding" not in response.headers:
            return await response.read()
        # compressed or unsized: count what arrives, so a bomb stops at the bound
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > limit:
                raise TransportError(
                    reason=f"response body exceeds max_body_size {limit}",
                    project_id=project_id,
                    offset=offset,
                    retryable=False,
                )
        return bytes(body)


def _request_ssl(
    session: aiohttp.ClientSession | None, *, verify_ssl: bool
) -> bool | ssl.SSLContext:
    """
    The ``ssl=`` each request passes: what makes *verify_ssl* hold whatever
    the session's connector says.

    False turns checks off for our requests only. True defers to the
    connector, which verifies when we made it, or when a borrowed one does
    (its own CA bundle or pinned fingerprint stays in force); a borrowed
    connector that does not verify gets a verifying context for our requests.
    """
    if not verify_ssl:
        return False
    connector = None if session is None else session.connector
    # aiohttp keeps the connector's setting private; read, never changed
    setting = getattr(connector, "_ssl", True)
    if setting is False or (
        isinstance(setting, ssl.SSLContext)
        and (setting.verify_mode == ssl.CERT_NONE or not setting.check_hostname)
    ):
        return ssl.create_default_context()
    return True


# another attempt would meet the same certificate (the certificate error is
# a ClientSSLError too)
_NOT_RETRYABLE: Final = aiohttp.ClientSSLError


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    # Name what failed without aiohttp's text, which may quote the request.
    if isinstance(exc, _NOT_RETRYABLE):
        return f"TLS handshake or certificate check failed ({type(exc).__name__})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response body was cut short"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection error ({exc.strerror or type(exc).__name__})"
    return f"request failed ({type(exc).__name__})"


def _check_answer(
    detail: BatchJobDetail,
    body: bytes,
    project_id: str,
    job_id: str,
    request_id: str | None,
) -> None:
    """
    A ShowBatchJob answer about another job, or that says it is of another
    project (a proxy's cache, a server bug), is refused: never the wrong job.
    """
    problems = []
    if detail.job_id != job_id:
        problems.append(f"asked for job {job_id}, the answer is job {detail.job_id}")
    if b'"project_id"' in body:  # the documented answer does not say
        said = orjson.loads(body).get("project_id")
        if isinstance(said, str) and said != project_id:
            problems.append(
                f"asked about project {project_id}, the answer is of project {said}"
            )
    if problems:
        raise DecodeError(
            problems=(f"job {job_id}", *problems),
            project_id=project_id,
            request_id=request_id,
            answer="job detail",
        )
