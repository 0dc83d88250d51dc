"""
`IefClient`: one aiohttp session, one request -> one `JobPage`, and the public walks.

This is the one module that talks aiohttp. The walks themselves
(`ief_jobs.pagination`, `ief_jobs.fanout`) are functions of a ``fetch_page``
callable and know nothing of HTTP; the client hands them `IefClient._fetch_page`.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from types import TracebackType
from typing import Final, Literal, Self

import aiohttp
from aiolimiter import AsyncLimiter
from yarl import URL

from ._signing import encode_query
from .auth import Auth, RefreshableAuth, auth_from_env
from .codec import decode_page
from .errors import (
    AuthenticationError,
    IefError,
    ThrottledError,
    TransportError,
    error_from_response,
)
from .fanout import merge_walks
from .models import BatchJob, JobPage, JobType, Progress, SortOrder
from .pagination import walk_pages
from .retry import AdaptiveLimiter, RetryPolicy
from .watch import JobEvent, watch

__all__ = ["DEFAULT_PAGE_SIZE", "DEFAULT_TIMEOUT", "IefClient"]

DEFAULT_PAGE_SIZE: Final = 100
DEFAULT_CONCURRENCY: Final = 32
# Per request: connecting should be quick; a page is small, so a long silence
# means a stuck server, not a slow one.
DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(
    total=60, connect=10, sock_connect=10, sock_read=30
)
DEFAULT_MAX_BODY_SIZE: Final = 32 * 1024 * 1024  # 1,000 records take about 0.3 MB
_PROJECT_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_REGION: Final = re.compile(r"[a-z]{2}(-[a-z0-9]+)+")
_CHUNK: Final = 64 * 1024

ErrorPolicy = Literal["raise", "collect"]


def check_project_id(project_id: str) -> str:
    """Refuse a project id that could change the path: a plain segment only."""
    if not isinstance(project_id, str) or not _PROJECT_ID.fullmatch(project_id):
        msg = f"project id must be letters, digits, '-' or '_', not {project_id!r}"
        raise ValueError(msg)
    return project_id


class IefClient:
    """
    An asyncio client for IEF's batch job listing.

    Use it as an async context manager: it creates and closes its own
    `aiohttp.ClientSession`, unless you pass *session*, which it borrows and
    never closes.

    Args:
        endpoint: ``https://ief.{region}.myhuaweicloud.com``, or any base URL
            (see `for_region`).
        auth: Adds credentials to each request (`TokenAuth`, ...).
        instance_id: Sent as ``ief-instance-id`` (platinum edition); each call
            may override it.
        session: An aiohttp session to borrow.
        concurrency: Most requests in flight across everything this client does.
        page_size: Records asked for per request (sent as ``limit``).
        retry: What to retry and how long to wait (`RetryPolicy`).
        timeout: Per request; the default bounds connecting and each read.
        max_body_size: A response body larger than this (after decompression)
            is refused with `TransportError`.
        verify_ssl: TLS certificate checks; turn off only for a test endpoint.
        adaptive: Halve the in-flight bound on 429 and grow it back on success.
        rate_limit: Most requests started per second, client-wide, evenly
            spaced, for users who know their quota (None: no limit). Retries
            count too.

    Example::

        async with IefClient(endpoint, auth=TokenAuth(token)) as ief:
            async for job in ief.iter_jobs(project_id):
                print(job.job_name, job.status)
    """

    __slots__ = (
        "_auth",
        "_base_path",
        "_closed",
        "_endpoint",
        "_instance_id",
        "_limiter",
        "_max_body_size",
        "_owns_session",
        "_rate_limiter",
        "_retry",
        "_session",
        "_timeout",
        "_verify_ssl",
        "adaptive",
        "concurrency",
        "page_size",
        "requests_sent",
    )

    def __init__(
        self,
        endpoint: str | URL,
        *,
        auth: Auth,
        instance_id: str | None = None,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        page_size: int = DEFAULT_PAGE_SIZE,
        retry: RetryPolicy | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        verify_ssl: bool = True,
        adaptive: bool = True,
        rate_limit: float | None = None,
    ) -> None:
        endpoint = URL(endpoint)
        if not endpoint.is_absolute() or endpoint.scheme not in {"http", "https"}:
            msg = f"endpoint must be an http(s) URL, not {str(endpoint)!r}"
            raise ValueError(msg)
        if (
            endpoint.user
            or endpoint.password
            or endpoint.query_string
            or endpoint.fragment
        ):
            msg = "endpoint must carry no credentials, query or fragment"
            raise ValueError(msg)
        _check_page_size(page_size)
        self._endpoint = endpoint
        self._base_path = endpoint.path.rstrip("/")
        self._auth = auth
        self._instance_id = instance_id
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._retry = retry if retry is not None else RetryPolicy()
        self._timeout = timeout
        self._max_body_size = max_body_size
        self._verify_ssl = verify_ssl
        self._limiter = AdaptiveLimiter(concurrency)
        if rate_limit is not None and not rate_limit > 0:
            msg = f"rate_limit must be above 0 requests a second, not {rate_limit}"
            raise ValueError(msg)
        # a bucket of one, refilled rate_limit times a second: no bursts
        self._rate_limiter = (
            None if rate_limit is None else AsyncLimiter(1, 1.0 / rate_limit)
        )
        self.concurrency = concurrency
        self.page_size = page_size
        self.adaptive = adaptive
        self.requests_sent = 0

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **kwargs: object
    ) -> IefClient:
        """
        A client configured by the environment, as Huawei Cloud's SDKs are.

        Credentials: ``HUAWEICLOUD_SDK_AK`` and ``HUAWEICLOUD_SDK_SK`` (and
        ``HUAWEICLOUD_SDK_SECURITY_TOKEN``), else ``IEF_TOKEN`` (`auth_from_env`).
        Endpoint: ``IEF_ENDPOINT``, else the region in ``IEF_REGION`` or
        ``HUAWEICLOUD_SDK_REGION``. Other arguments go to the constructor.

        Example::

            async with IefClient.from_env() as ief:
                print(await ief.count_jobs(project_id))

        Raises:
            ValueError: No credentials, or no endpoint or region, in the environment.
        """
        env = os.environ if environ is None else environ
        auth = kwargs.pop("auth", None) or auth_from_env(env)
        if auth is None:
            msg = (
                "no credentials: set HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK, "
                "or IEF_TOKEN"
            )
            raise ValueError(msg)
        endpoint = env.get("IEF_ENDPOINT")
        if endpoint:
            return cls(endpoint, auth=auth, **kwargs)  # type: ignore[arg-type]
        region = env.get("IEF_REGION") or env.get("HUAWEICLOUD_SDK_REGION")
        if region:
            return cls.for_region(region, auth=auth, **kwargs)
        msg = "no endpoint: set IEF_ENDPOINT, or IEF_REGION to a region name"
        raise ValueError(msg)

    @classmethod
    def for_region(cls, region: str, **kwargs: object) -> IefClient:
        """
        A client for ``https://ief.{region}.myhuaweicloud.com``.

        Example::

            IefClient.for_region("cn-north-4", auth=TokenAuth(token))
        """
        if not _REGION.fullmatch(region):
            msg = f"not a region name: {region!r}"
            raise ValueError(msg)
        return cls(f"https://ief.{region}.myhuaweicloud.com", **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"IefClient({str(self._endpoint)!r}, auth={self._auth!r})"

    @property
    def endpoint(self) -> URL:
        """The base URL requests go to."""
        return self._endpoint

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    @property
    def limiter(self) -> AdaptiveLimiter:
        """The client-wide bound on requests in flight."""
        return self._limiter

    async def __aenter__(self) -> Self:
        self._ensure_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """
        Close the session if this client created it, and the auth's own
        resources (`IamPasswordAuth`'s IAM session). Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()
        close_auth = getattr(self._auth, "aclose", None)
        if close_auth is not None:  # IamPasswordAuth's IAM session
            await close_auth()

    def _ensure_session(self) -> aiohttp.ClientSession:
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

    # -- one request -> one page ------------------------------------------------

    async def _fetch_page(
        self,
        project_id: str,
        *,
        offset: int,
        limit: int,
        job_type: JobType | str | None = None,
        sort: SortOrder | str | None = None,
        instance_id: str | None = None,
    ) -> JobPage:
        """Fetch one page, with retries; errors name the project and offset."""
        query = [("limit", str(limit)), ("offset", str(offset))]
        if job_type is not None:
            query.append(("job_type", str(job_type)))
        if sort is not None:
            query.append(("sort", str(sort)))
        path = self._endpoint.with_path(
            f"{self._base_path}/v2/{project_id}/productmgr/jobs"
        )
        # encoded by the signer's rules and sent as is: what AkSkAuth signs is
        # byte for byte what goes on the wire (":" as %3A, names sorted)
        url = URL(f"{path}?{encode_query(query)}", encoded=True)
        instance = instance_id if instance_id is not None else self._instance_id
        attempt_number = 0
        try:
            async for attempt in self._retry.retrying():
                with attempt:
                    attempt_number = attempt.retry_state.attempt_number
                    return await self._send(url, project_id, offset, instance)
        except IefError as exc:
            exc.attempts = attempt_number
            raise
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _send(
        self, url: URL, project_id: str, offset: int, instance_id: str | None
    ) -> JobPage:
        session = self._ensure_session()
        headers = {"Content-Type": "application/json", "X-Project-Id": project_id}
        if instance_id is not None:
            headers["ief-instance-id"] = instance_id
        refreshed = False
        while True:
            sent = dict(headers)
            ticket = await self._limiter.acquire()
            try:
                if self._rate_limiter is not None:
                    await self._rate_limiter.acquire()
                # signed last, so X-Sdk-Date is not aged by the wait for a slot
                await self._authorize(url, sent, project_id, offset)
                status, body, answer_headers = await self._request(
                    session, url, sent, project_id, offset
                )
            finally:
                self._limiter.release()
            request_id = answer_headers.get("X-Request-Id")
            if 200 <= status < 300:  # noqa: PLR2004
                if self.adaptive:
                    self._limiter.succeeded()
                return decode_page(
                    body, project_id=project_id, offset=offset, request_id=request_id
                )
            error = error_from_response(
                status, body, answer_headers, project_id=project_id, offset=offset
            )
            if isinstance(error, ThrottledError) and self.adaptive:
                self._limiter.throttled(ticket)
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

    async def _authorize(
        self, url: URL, headers: dict[str, str], project_id: str, offset: int
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
        offset: int,
    ) -> tuple[int, bytes, dict[str, str]]:
        self.requests_sent += 1
        try:
            # a redirect would carry our credentials wherever it points: never follow
            async with session.get(
                url, headers=headers, allow_redirects=False
            ) as response:
                body = await self._read_body(response, project_id, offset)
                answer_headers = {
                    name: response.headers[name]
                    for name in ("X-Request-Id", "Retry-After", "Location")
                    if name in response.headers
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
        self, response: aiohttp.ClientResponse, project_id: str, offset: int
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

    # -- the walks ------------------------------------------------------------

    def _page_fetcher(
        self,
        project_id: str,
        job_type: JobType | str | None,
        sort: SortOrder | str | None,
        instance_id: str | None,
    ) -> Callable[[int, int], asyncio.Future[JobPage] | object]:
        async def fetch(offset: int, limit: int) -> JobPage:
            return await self._fetch_page(
                project_id,
                offset=offset,
                limit=limit,
                job_type=job_type,
                sort=sort,
                instance_id=instance_id,
            )

        return fetch

    def iter_pages(
        self,
        project_id: str,
        *,
        job_type: JobType | str | None = None,
        sort: SortOrder | str | None = None,
        page_size: int | None = None,
        offset: int = 0,
        max_items: int | None = None,
        instance_id: str | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> AsyncIterator[JobPage]:
        """
        Yield the pages of *project_id*'s listing, in order.

        The first page tells ``job_count``; the rest are then fetched
        concurrently (within the client's bound) and still yielded in order.
        Each page carries its ``offset`` and ``next_offset``: resume a listing
        with ``offset=page.next_offset``. The first page is yielded even when
        empty, so ``job_count`` is always seen.

        Example::

            async for page in ief.iter_pages("p1", page_size=200):
                print(page.offset, len(page.jobs), page.job_count)

        Raises:
            ValueError: A bad argument, before any request.
            ApiError: IEF refused a page (after retries, where they apply).
            TransportError: No usable answer for a page.
            DecodeError: A page was not the documented JSON.
        """
        size = self.page_size if page_size is None else page_size
        _check_walk(project_id, size, offset, max_items)
        return walk_pages(
            self._page_fetcher(project_id, job_type, sort, instance_id),  # type: ignore[arg-type]
            project_id=project_id,
            offset=offset,
            page_size=size,
            max_items=max_items,
            window=self.concurrency,
            sort=sort,
            on_progress=on_progress,
        )

    async def iter_jobs(
        self,
        project_id: str,
        *,
        job_type: JobType | str | None = None,
        sort: SortOrder | str | None = None,
        page_size: int | None = None,
        offset: int = 0,
        max_items: int | None = None,
        instance_id: str | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> AsyncIterator[BatchJob]:
        """
        Yield every batch job of *project_id*, page after page, in order.

        Stops after ``job_count`` records (or *max_items*) and never asks for a
        page past the end. Arguments as for `iter_pages`.

        Example::

            async for job in ief.iter_jobs("p1", job_type=JobType.NODE_UPGRADE):
                print(job.job_name, job.status)
        """
        pages = self.iter_pages(
            project_id,
            job_type=job_type,
            sort=sort,
            page_size=page_size,
            offset=offset,
            max_items=max_items,
            instance_id=instance_id,
            on_progress=on_progress,
        )
        try:
            async for page in pages:
                for job in page.jobs:
                    yield job
        finally:
            await pages.aclose()  # type: ignore[attr-defined]

    async def iter_jobs_many(
        self,
        project_ids: Iterable[str],
        *,
        job_type: JobType | str | None = None,
        sort: SortOrder | str | None = None,
        page_size: int | None = None,
        max_items: int | None = None,
        instance_id: str | None = None,
        errors: ErrorPolicy = "raise",
        on_progress: Callable[[Progress], None] | None = None,
    ) -> AsyncIterator[tuple[str, BatchJob]]:
        """
        List every project at once; yield ``(project_id, job)`` as pages arrive.

        All projects share the client's one bound on requests in flight. Each
        project's records come in that project's order; projects interleave.
        A project id given twice is listed once. *max_items* applies per project.

        With ``errors="raise"`` (the default) the first failure cancels the
        rest and is raised. With ``errors="collect"`` every other project
        finishes first, then the failures are raised together as an
        `ExceptionGroup` of `IefError`s, each naming its project and offset.

        Example::

            async for project_id, job in ief.iter_jobs_many(["p1", "p2"]):
                print(project_id, job.job_name)
        """
        if errors not in {"raise", "collect"}:
            msg = f"errors must be 'raise' or 'collect', not {errors!r}"
            raise ValueError(msg)
        unique = list(dict.fromkeys(project_ids))
        size = self.page_size if page_size is None else page_size
        for project_id in unique:
            _check_walk(project_id, size, 0, max_items)

        def walk(project_id: str) -> AsyncIterator[JobPage]:
            return self.iter_pages(
                project_id,
                job_type=job_type,
                sort=sort,
                page_size=size,
                max_items=max_items,
                instance_id=instance_id,
                on_progress=on_progress,
            )

        pages = merge_walks(
            unique, walk, collect_errors=errors == "collect", buffer=self.concurrency
        )
        try:
            async for page in pages:
                project_id = page.project_id
                for job in page.jobs:
                    yield project_id, job
        finally:
            await pages.aclose()  # type: ignore[attr-defined]

    async def list_jobs(
        self,
        project_id: str,
        *,
        job_type: JobType | str | None = None,
        sort: SortOrder | str | None = None,
        max_items: int | None = None,
        instance_id: str | None = None,
    ) -> list[BatchJob]:
        """
        Every batch job of *project_id* as a list (see `iter_jobs`).

        Example::

            jobs = await ief.list_jobs("p1", sort=SortOrder.CREATED_AT_ASC)
        """
        return [
            job
            async for job in self.iter_jobs(
                project_id,
                job_type=job_type,
                sort=sort,
                max_items=max_items,
                instance_id=instance_id,
            )
        ]

    def watch_jobs(
        self,
        project_ids: Iterable[str],
        *,
        interval: float = 30.0,
        job_type: JobType | str | None = None,
        instance_id: str | None = None,
        emit_existing: bool = False,
        only_unfinished: bool = False,
        skip_idle: bool = True,
        report_after: int = 3,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> AsyncGenerator[JobEvent, None]:
        """
        Re-list *project_ids* every *interval* seconds; yield `JobEvent`s.

        Events: ``created``, ``status_changed`` (``old_status``, ``new_status``),
        ``progress`` (task counts), ``finished`` (reached Successful,
        Partially_successful, Failed, Stopped or Timed_out), ``deleted``, and
        ``project_failed`` when a project's polls keep failing (the watch goes
        on). The first listing yields nothing unless *emit_existing*.
        *only_unfinished* follows only jobs not yet final; *skip_idle* lists a
        project whose jobs are all final only when its ``job_count`` moves (one
        request with ``limit=1``). A slow consumer delays the next poll; ``break``
        or cancellation stops everything. See `ief_jobs.watch` for the details.

        Example::

            async for event in ief.watch_jobs(["p1", "p2"], interval=15):
                if event.kind == "finished":
                    print(event.job.job_name, event.new_status)
        """
        ids = list(dict.fromkeys(project_ids))
        for project_id in ids:
            check_project_id(project_id)

        async def list_project(project_id: str) -> list[BatchJob]:
            return await self.list_jobs(
                project_id, job_type=job_type, instance_id=instance_id
            )

        async def count_project(project_id: str) -> int:
            return await self.count_jobs(
                project_id, job_type=job_type, instance_id=instance_id
            )

        return watch(
            ids,
            list_project=list_project,
            count_project=count_project,
            interval=interval,
            emit_existing=emit_existing,
            only_unfinished=only_unfinished,
            skip_idle=skip_idle,
            report_after=report_after,
            clock=clock,
            sleep=sleep,
        )

    async def count_jobs(
        self,
        project_id: str,
        *,
        job_type: JobType | str | None = None,
        instance_id: str | None = None,
    ) -> int:
        """
        How many batch jobs match, from one request with ``limit=1``.

        Example::

            total = await ief.count_jobs("p1", job_type=JobType.NODE_UPGRADE)
        """
        check_project_id(project_id)
        page = await self._fetch_page(
            project_id, offset=0, limit=1, job_type=job_type, instance_id=instance_id
        )
        return page.job_count


def _check_page_size(page_size: int) -> None:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        msg = f"page_size must be a whole number of at least 1, not {page_size!r}"
        raise ValueError(msg)


def _check_walk(
    project_id: str, page_size: int, offset: int, max_items: int | None
) -> None:
    check_project_id(project_id)
    _check_page_size(page_size)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        msg = f"offset must be a whole number of at least 0, not {offset!r}"
        raise ValueError(msg)
    if max_items is not None and (
        isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0
    ):
        msg = (
            f"max_items must be None or a whole number of at least 0, not {max_items!r}"
        )
        raise ValueError(msg)


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
