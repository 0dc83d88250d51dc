"""
`IefClient`: the public methods of the listing, over one `Transport`.

Each public method checks its arguments and builds one `ListQuery` where it is
called, before any request; the query then travels unchanged to the walks
(`ief_jobs.pagination`, `ief_jobs.fanout`, `ief_jobs.watch`: functions of
fetch callables, no HTTP) and to the transport (`ief_jobs.transport`), which
turns one request into one `JobPage`.
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
    Coroutine,
    Iterable,
    Mapping,
)
from operator import attrgetter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeVar

import aiohttp
from yarl import URL

if TYPE_CHECKING:  # the otel extra: only its types, and only for type checkers
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

from ._checks import (
    check_callable,
    check_choice,
    check_flag,
    check_instance,
    check_int,
    check_job_id,
    check_project_id,
    check_project_ids,
    check_seconds,
    check_text,
)
from ._closing import AsyncClosing
from ._telemetry import (
    Call,
    WatchHealth,
    WatchObserver,
    make_telemetry,
    traced,
    traced_pages,
)
from .auth import Auth, auth_from_env
from .checkpoint import Checkpoint
from .errors import NotFoundError
from .fanout import merge_walks
from .listing import FetchPage, PageBudget, walk_pages
from .models import (
    BatchJob,
    BatchJobDetail,
    JobPage,
    JobType,
    ListQuery,
    Progress,
    SortOrder,
)
from .retry import AdaptiveLimiter, RetryPolicy
from .transport import DEFAULT_MAX_BODY_SIZE, DEFAULT_TIMEOUT, Transport
from .watch import DEFAULT_RECONCILE_EVERY, JobEvent, Sink, watch

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_TIMEOUT",
    "IefClient",
    "Stream",
    "check_job_id",
    "check_project_id",
]

DEFAULT_PAGE_SIZE: Final = 100
DEFAULT_CONCURRENCY: Final = 32
_REGION: Final = re.compile(r"[a-z]{2}(-[a-z0-9]+)+")

ErrorPolicy = Literal["raise", "collect"]
T = TypeVar("T")


def _endpoint_url(endpoint: str | URL) -> URL:
    check_instance("endpoint", endpoint, (str, URL), "a str or yarl.URL")
    url = URL(endpoint)
    if not url.is_absolute() or url.scheme not in {"http", "https"}:
        msg = f"endpoint must be an http(s) URL, not {str(url)!r}"
        raise ValueError(msg)
    if url.user or url.password or url.query_string or url.fragment:
        msg = "endpoint must carry no credentials, query or fragment"
        raise ValueError(msg)
    return url


def _client_timeout(timeout: object) -> aiohttp.ClientTimeout:
    # seconds bound one whole request, as DESIGN.md promises
    if isinstance(timeout, aiohttp.ClientTimeout):
        return timeout
    seconds = check_seconds("timeout", timeout, above=True)
    return aiohttp.ClientTimeout(total=seconds)


class Stream(AsyncGenerator[T, None], AsyncClosing):
    """
    What the ``iter_*`` methods return: an async generator that is also an
    async context manager, so leaving the block stops the work behind it.

    ``break`` alone closes an async generator only when nothing else refers
    to it any more (Python closes it on ``aclose()`` or garbage collection);
    until then its requests go on. Leaving ``async with`` calls `aclose`,
    which cancels every request in flight and returns when they are gone.

    Example::

        async with ief.iter_jobs_many(project_ids) as jobs:
            async for project_id, job in jobs:
                if job.status == JobStatus.FAILED:
                    break  # nothing is in flight once the block is left

    ``contextlib.aclosing(ief.iter_jobs(...))`` does the same.

    With *redeliver* (`IefClient.watch_jobs`), an exception leaving ``async
    with`` is thrown into the generator before it closes, so it can tell a
    consumer that failed with an item from one that stopped cleanly.
    """

    __slots__ = ("_generator", "_next", "_redeliver")

    def __init__(
        self, generator: AsyncGenerator[T, None], *, redeliver: bool = False
    ) -> None:
        self._generator = generator
        self._next = generator.__anext__  # bound once: one call per item
        self._redeliver = redeliver

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._redeliver and isinstance(exc, Exception):
            # only an Exception: cancellation, Ctrl-C and exit are clean stops
            try:
                await self._generator.athrow(exc)
            except BaseException as raised:
                if raised is not exc and not isinstance(raised, StopAsyncIteration):
                    raise
            finally:
                exc.__traceback__ = tb  # as it left the block, not as thrown in
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[T]:
        # ``async for`` then steps the generator itself: no lookup through this
        # class per item (a third of what an item costs to hand on)
        return self._generator

    if TYPE_CHECKING:  # typeshed types the generator's awaitable as a Coroutine

        def __anext__(self) -> Coroutine[Any, Any, T]: ...

    else:
        # ``async for`` and ``anext()`` look __anext__ up on the class and call
        # what they find; a C-level property hands them the generator's own
        # bound __anext__, so no frame of ours runs per item (``stream.__anext__()``
        # works too; only the unbound ``Stream.__anext__(stream)`` does not)
        __anext__ = property(attrgetter("_next"))

    async def asend(self, value: None) -> T:
        """Send *value* in (always None here): the next item."""
        return await self._generator.asend(value)

    async def athrow(  # type: ignore[override]  # one of typeshed's overloads
        self, typ: BaseException, val: None = None, tb: TracebackType | None = None
    ) -> T:
        """Raise *typ* inside the generator."""
        return await self._generator.athrow(typ, val, tb)

    async def aclose(self) -> None:
        """Stop: cancel the work behind the stream and wait for it. Idempotent."""
        await self._generator.aclose()


class IefClient(AsyncClosing):
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
        timeout: Per request, in seconds (an int or float bounds each whole
            request), or an `aiohttp.ClientTimeout`; the default bounds
            connecting and each read. It holds on a borrowed *session* too.
        max_body_size: A response body larger than this (after decompression)
            is refused with `TransportError`.
        verify_ssl: TLS certificate checks; turn off only for a test endpoint.
            It holds on a borrowed *session* too: one whose connector does not
            verify still verifies this client's requests.
        adaptive: Halve the in-flight bound on 429 and grow it back on success.
        rate_limit: Most requests started per second, client-wide, evenly
            spaced, for users who know their quota (None: no limit). Retries
            count too.
        tracer_provider: Where spans go (an OpenTelemetry ``TracerProvider``;
            None: the global one). Needs the ``otel`` extra.
        meter_provider: Where metrics go (an OpenTelemetry ``MeterProvider``;
            None: the global one). Needs the ``otel`` extra.

    With the ``otel`` extra installed the client makes a span per public call
    and per HTTP attempt, and metrics (README, "Operating it"); without it
    nothing of OpenTelemetry is imported.

    Every argument is checked here, before any request: a wrong type raises
    `TypeError` and a value out of range `ValueError`, each naming the
    argument.

    Example::

        async with IefClient(endpoint, auth=TokenAuth(token)) as ief:
            async for job in ief.iter_jobs(project_id):
                print(job.job_name, job.status)
    """

    __slots__ = ("_budget", "_endpoint", "_transport", "concurrency", "page_size")

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
        timeout: float | aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        verify_ssl: bool = True,
        adaptive: bool = True,
        rate_limit: float | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        endpoint = _endpoint_url(endpoint)
        check_instance(
            "auth",
            auth,
            Auth,
            "an Auth (TokenAuth, AkSkAuth, IamPasswordAuth, or one of your own)",
        )
        check_instance(
            "session", session, (aiohttp.ClientSession, type(None)), "a ClientSession"
        )
        check_int("concurrency", concurrency, minimum=1)
        # the same checks as every call's
        ListQuery(page_size=page_size, instance_id=instance_id)
        check_instance("retry", retry, (RetryPolicy, type(None)), "a RetryPolicy")
        request_timeout = _client_timeout(timeout)
        check_int("max_body_size", max_body_size, minimum=1)
        check_flag("verify_ssl", verify_ssl)
        check_flag("adaptive", adaptive)
        if rate_limit is not None:
            check_seconds(
                "rate_limit", rate_limit, above=True, unit="requests a second"
            )
        self._endpoint = endpoint
        self._transport = Transport(
            endpoint,
            auth=auth,
            instance_id=instance_id,
            session=session,
            concurrency=concurrency,
            retry=retry if retry is not None else RetryPolicy(),
            timeout=request_timeout,
            max_body_size=max_body_size,
            verify_ssl=verify_ssl,
            adaptive=adaptive,
            rate_limit=rate_limit,
            telemetry=make_telemetry(endpoint, tracer_provider, meter_provider),
        )
        self.concurrency = concurrency
        self.page_size = page_size
        # pages sent ahead and not yet handed on, across every walk: as many
        # in flight as the transport allows and as many again fetched, so a
        # stalled consumer stalls the fetching however many walks run at once
        self._budget = PageBudget(2 * concurrency)

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
        check_text("region", region)
        if not _REGION.fullmatch(region):
            msg = f"not a region name: {region!r}"
            raise ValueError(msg)
        return cls(f"https://ief.{region}.myhuaweicloud.com", **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"IefClient({str(self._endpoint)!r}, auth={self._transport._auth!r})"  # noqa: SLF001

    @property
    def endpoint(self) -> URL:
        """The base URL requests go to."""
        return self._endpoint

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._transport.closed

    @property
    def limiter(self) -> AdaptiveLimiter:
        """The client-wide bound on requests in flight."""
        return self._transport.limiter

    @property
    def requests_sent(self) -> int:
        """Requests sent so far, retries included."""
        return self._transport.requests_sent

    @property
    def adaptive(self) -> bool:
        """Whether the in-flight bound halves on 429 and grows back on success."""
        return self._transport.adaptive

    async def __aenter__(self) -> Self:
        self._transport.ensure_session()
        return self

    async def aclose(self) -> None:
        """
        Close the session if this client created it, and the auth's own
        resources (`IamPasswordAuth`'s IAM session). Idempotent.
        """
        await self._transport.aclose()

    # -- the walks ------------------------------------------------------------

    def _query(
        self,
        *,
        job_type: JobType | str | None = None,
        sort: SortOrder | str | None = None,
        page_size: int | None = None,
        offset: int = 0,
        max_items: int | None = None,
        instance_id: str | None = None,
    ) -> ListQuery:
        return ListQuery(
            job_type=job_type,
            sort=sort,  # the converter checks the text
            page_size=self.page_size if page_size is None else page_size,
            offset=offset,
            max_items=max_items,
            instance_id=instance_id,
        )

    def _walk(
        self,
        project_id: str,
        query: ListQuery,
        on_progress: Callable[[Progress], None] | None,
        call: Call | None = None,
    ) -> AsyncGenerator[JobPage, None]:
        if on_progress is not None:  # here, at the call: walk_pages is lazy
            check_callable("on_progress", on_progress)
        return walk_pages(
            self._transport.page_reader(project_id, query, call),
            query,
            project_id=project_id,
            window=self.concurrency,
            on_progress=on_progress,
            budget=self._budget,
        )

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
    ) -> Stream[JobPage]:
        """
        Yield the pages of *project_id*'s listing, in order.

        The first page tells ``job_count``; the rest are then fetched
        concurrently (within the client's bound) and still yielded in order.
        Each page carries its ``offset`` and ``next_offset``: resume a listing
        with ``offset=page.next_offset``. The first page is yielded even when
        empty, so ``job_count`` is always seen. Arguments are checked here, at
        the call, before any request.

        The result is a `Stream`: an async generator, and an async context
        manager whose exit cancels whatever is still in flight. ``break``
        alone stops the requests only once nothing refers to the generator
        any more; use ``async with`` (or ``contextlib.aclosing``) to stop them
        at once.

        Example::

            async with ief.iter_pages("p1", page_size=200) as pages:
                async for page in pages:
                    print(page.offset, len(page.jobs), page.job_count)

        Raises:
            ValueError: A bad argument, at the call.
            ApiError: IEF refused a page (after retries, where they apply).
            TransportError: No usable answer for a page.
            DecodeError: A page was not the documented JSON.
        """
        return Stream(
            self._traced_walk(
                "iter_pages",
                project_id,
                self._query(
                    job_type=job_type,
                    sort=sort,
                    page_size=page_size,
                    offset=offset,
                    max_items=max_items,
                    instance_id=instance_id,
                ),
                on_progress,
            )
        )

    def _traced_walk(
        self,
        name: str,
        project_id: str,
        query: ListQuery,
        on_progress: Callable[[Progress], None] | None,
    ) -> AsyncGenerator[JobPage, None]:
        """One project's walk, in a span named *name* with telemetry on."""
        check_project_id(project_id)
        telemetry = self._transport.live_telemetry()
        if telemetry is None:
            return self._walk(project_id, query, on_progress)
        call = telemetry.call(name, project_id, query)
        return traced_pages(call, self._walk(project_id, query, on_progress, call))

    def iter_jobs(
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
    ) -> Stream[BatchJob]:
        """
        Yield every batch job of *project_id*, page after page, in order.

        Stops after ``job_count`` records (or *max_items*) and never asks for a
        page past the end. Arguments as for `iter_pages`, checked at the call;
        a `Stream`, as there (``async with`` stops it at once).

        Example::

            async for job in ief.iter_jobs("p1", job_type=JobType.NODE_UPGRADE):
                print(job.job_name, job.status)
        """
        query = self._query(
            job_type=job_type,
            sort=sort,
            page_size=page_size,
            offset=offset,
            max_items=max_items,
            instance_id=instance_id,
        )
        pages = self._traced_walk("iter_jobs", project_id, query, on_progress)
        return Stream(_jobs_of(pages))

    def iter_jobs_many(
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
    ) -> Stream[tuple[str, BatchJob]]:
        """
        List every project at once; yield ``(project_id, job)`` as pages arrive.

        All projects share the client's one bound on requests in flight. Each
        project's records come in that project's order; projects interleave.
        A project id given twice is listed once. *max_items* applies per project.
        Arguments are checked at the call, before any request.

        With ``errors="raise"`` (the default) the first failure cancels the
        rest and is raised. With ``errors="collect"`` every other project
        finishes first, then the failures are raised together as an
        `ExceptionGroup` of `IefError`s, each naming its project and offset.

        A `Stream`: leaving ``async with`` (or ``contextlib.aclosing``)
        cancels every project's requests before it returns; ``break`` alone
        does so only once nothing refers to the stream any more.

        Example::

            async with ief.iter_jobs_many(["p1", "p2"]) as jobs:
                async for project_id, job in jobs:
                    print(project_id, job.job_name)
        """
        check_choice("errors", errors, ("raise", "collect"))
        unique = check_project_ids(project_ids)
        if on_progress is not None:  # each project's walk starts later
            check_callable("on_progress", on_progress)
        query = self._query(
            job_type=job_type,
            sort=sort,
            page_size=page_size,
            max_items=max_items,
            instance_id=instance_id,
        )
        telemetry = self._transport.live_telemetry()
        call = None
        if telemetry is not None:
            call = telemetry.call("iter_jobs_many", None, query, projects=len(unique))
        pages = merge_walks(
            unique,
            lambda project_id: self._walk(project_id, query, on_progress, call),
            collect_errors=errors == "collect",
            buffer=max(self.concurrency // 2, 1),  # the budget buffers the rest
            active=self.concurrency,
        )
        if call is not None:
            pages = traced_pages(call, pages)
        return Stream(_pairs_of(pages))

    async def list_jobs(
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
    ) -> list[BatchJob]:
        """
        Every batch job of *project_id* as a list; the options of `iter_jobs`.

        Example::

            jobs = await ief.list_jobs("p1", sort=SortOrder.CREATED_AT_ASC)
        """
        query = self._query(
            job_type=job_type,
            sort=sort,
            page_size=page_size,
            offset=offset,
            max_items=max_items,
            instance_id=instance_id,
        )
        pages = self._traced_walk("list_jobs", project_id, query, on_progress)
        jobs = Stream(_jobs_of(pages))
        async with jobs:  # a failure closes the walk at once, not at GC
            return [job async for job in jobs]

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
        reconcile_every: int = DEFAULT_RECONCILE_EVERY,
        checkpoint: Checkpoint | None = None,
        sink: Sink | None = None,
        shard: tuple[int, int] | None = None,
        reset_state: bool = False,
        lease_ttl: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        health: WatchHealth | None = None,
    ) -> Stream[JobEvent]:
        """
        Poll *project_ids* every *interval* seconds; yield `JobEvent`s.

        Events: ``created``, ``status_changed`` (``old_status``, ``new_status``),
        ``progress`` (task counts), ``finished`` (reached Successful,
        Partially_successful, Failed, Stopped or Timed_out), ``deleted``, and
        ``project_failed`` when a project's polls keep failing (the watch goes
        on). Each carries a stable ``event_id``. The first listing yields
        nothing unless *emit_existing*. *only_unfinished* follows only jobs not
        yet final; *skip_idle* costs a project whose jobs are all final one
        request with ``limit=1`` a poll while nothing changes.

        A poll costs what changed: it reads the newest jobs until it meets one
        it knows and down to the oldest unfinished one, refreshes an old
        unfinished job on its own where that is cheaper, and re-lists a project
        whole only when ``job_count`` shows a change it did not see, and every
        *reconcile_every* polls (staggered across projects; 1 re-lists every
        poll). At most the client's *concurrency* projects are polled at once.

        With *checkpoint* (`SqliteCheckpoint`, `RedisCheckpoint`) the watch
        resumes after a restart: first what it had not delivered, then
        everything that changed meanwhile. An event counts as taken when the
        consumer asks for the next one, or stops cleanly (``break`` out of
        ``async with``, ``aclose()``, cancellation, SIGTERM/SIGINT in the
        CLI); an exception leaving ``async with`` (or thrown in with
        ``athrow``) keeps it, and after a crash it comes again, same
        ``event_id``. The state records what it watches (this client's
        endpoint host and instance, *job_type*, *only_unfinished*) and a
        watch with other settings refuses it (`StateError`) unless
        *reset_state*, which starts it over. It has one live owner: a second
        watcher fails at start (`StateError`); a Redis lease lasts *lease_ttl*
        seconds without a poll (by default three intervals, at least 10 s).
        With *sink* (`RedisStreamSink`) each poll's job events are written to
        it before they are yielded, each change once: with a `RedisCheckpoint`
        on the same server in one transaction with the state, otherwise the
        sink drops an ``event_id`` it already holds (see `ief_jobs.sink`).
        A 401, 403 or 404 on a project's first poll is a ``project_failed``
        event at once. With ``shard=(index, count)`` it keeps the projects
        whose stable hash falls in shard *index* of *count*. A slow consumer
        delays the next poll; ``break`` or cancellation stops everything. See
        `ief_jobs.watch`.
        *health* (a `WatchHealth`) learns of each poll round, for a liveness
        probe; with the ``otel`` extra each round is a ``watch.poll`` span.

        Like the ``iter_*`` methods it returns a `Stream`: leaving ``async
        with`` stops it.

        Example::

            async with (
                SqliteCheckpoint("watch.db") as state,
                ief.watch_jobs(["p1", "p2"], interval=15, checkpoint=state) as events,
            ):
                async for event in events:
                    await sink.put(event.event_id, event)  # drops repeats

        Raises:
            ValueError: No project id, *interval* under 0.1 s or over a day,
                *shard* out of range or a bad *lease_ttl*: at the call,
                before any request.
            TypeError: *project_ids* is a single string, *checkpoint* is not a
                `Checkpoint` (a path: use `SqliteCheckpoint`), or a flag is
                not a bool.
        """
        ids = check_project_ids(project_ids)
        query = self._query(
            job_type=job_type, instance_id=instance_id, sort=SortOrder.CREATED_AT_DESC
        )
        fetchers: dict[str, FetchPage] = {}

        async def read_page(project_id: str, offset: int, limit: int) -> JobPage:
            fetch = fetchers.get(project_id)
            if fetch is None:  # built once per project: URL parts and headers
                fetch = self._transport.page_fetcher(project_id, query)
                fetchers[project_id] = fetch
            return await fetch(offset, limit)

        async def list_project(project_id: str) -> list[BatchJob]:
            return [job async for job in _jobs_of(self._walk(project_id, query, None))]

        async def show_job(project_id: str, job_id: str) -> BatchJob | None:
            try:
                detail = await self.get_job(project_id, job_id, instance_id=instance_id)
            except NotFoundError:
                return None  # deleted
            return detail.to_job()

        return Stream(
            watch(
                ids,
                read_page=read_page,
                list_project=list_project,
                show_job=show_job,
                interval=interval,
                emit_existing=emit_existing,
                only_unfinished=only_unfinished,
                skip_idle=skip_idle,
                report_after=report_after,
                reconcile_every=reconcile_every,
                page_size=self.page_size,
                concurrency=self.concurrency,
                checkpoint=checkpoint,
                sink=sink,
                shard=shard,
                scope={
                    "endpoint": self._endpoint.host,
                    "instance_id": query.instance_id or self._transport._instance_id,  # noqa: SLF001 (the default)
                    "job_type": None if query.job_type is None else str(query.job_type),
                },
                reset_state=reset_state,
                lease_ttl=lease_ttl,
                clock=clock,
                sleep=sleep,
                observer=self._watch_observer(health, query),
            ),
            redeliver=True,
        )

    def _watch_observer(
        self, health: WatchHealth | None, query: ListQuery
    ) -> WatchObserver | None:
        telemetry = self._transport.live_telemetry()
        if telemetry is not None:
            return telemetry.watch_observer(health, query)
        return None if health is None else WatchObserver(health)

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
        query = self._query(job_type=job_type, instance_id=instance_id)
        call = self._call("count_jobs", project_id, query)
        return await traced(call, self._count(project_id, query, call))

    async def get_job(
        self, project_id: str, job_id: str, *, instance_id: str | None = None
    ) -> BatchJobDetail:
        """
        One batch job with its sub-tasks and targets (IEF's ShowBatchJob).

        One request, with the same credentials, in-flight bound, retries, body
        bound and error mapping as a page of the listing. The ids are checked
        here, at the call, before any request. ``detail.to_job()`` is the
        `BatchJob` the listing gives for it.

        Example::

            detail = await ief.get_job("p1", job.job_id)
            for task in detail.tasks:
                print(task.task_name, task.status, task.reason)

        Raises:
            ValueError: A project or job id that is not a plain path segment.
            NotFoundError: No job with this id in the project.
            ApiError: IEF refused the request (after retries, where they apply).
            TransportError: No usable answer.
            DecodeError: The answer was not the documented JSON.
        """
        check_project_id(project_id)
        check_job_id(job_id)
        query = self._query(instance_id=instance_id)  # checked as a listing's
        call = self._call("get_job", project_id, None)
        # the transport refuses an answer about another job (DecodeError)
        return await traced(
            call,
            self._transport.get_job(project_id, job_id, query.instance_id, call),
        )

    def _call(self, name: str, project_id: str, query: ListQuery | None) -> Call | None:
        telemetry = self._transport.live_telemetry()
        return None if telemetry is None else telemetry.call(name, project_id, query)

    async def _count(
        self, project_id: str, query: ListQuery, call: Call | None = None
    ) -> int:
        page = await self._transport.page_fetcher(project_id, query, call)(0, 1)
        return page.job_count


async def _jobs_of(
    pages: AsyncGenerator[JobPage, None],
) -> AsyncGenerator[BatchJob, None]:
    try:
        async for page in pages:
            for job in page.jobs:
                yield job
    finally:
        await pages.aclose()


async def _pairs_of(
    pages: AsyncGenerator[JobPage, None],
) -> AsyncGenerator[tuple[str, BatchJob], None]:
    try:
        async for page in pages:
            project_id = page.project_id
            for job in page.jobs:
                yield project_id, job
    finally:
        await pages.aclose()
