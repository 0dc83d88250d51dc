"""
The threat list of SECURITY.md, each case against a real server on 127.0.0.1:
a raw aiohttp app that misbehaves the way the case needs, or the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import ssl
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
import trustme
from aiohttp import web

from _support import PROJECT, TOKEN, no_sleep, wire_jobs
from ief_jobs import (
    NO_RETRIES,
    ApiError,
    IefClient,
    RetryPolicy,
    TokenAuth,
    TransportError,
)
from ief_jobs.emulator import Emulator, Faults

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CREDENTIAL_HEADERS = ("X-Auth-Token", "Authorization", "X-Security-Token")


@contextlib.asynccontextmanager
async def _serve(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve *handler* for every path on a free loopback port; yield its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    # handlers still sleeping at the end are cut off, not waited for
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.05)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server: Any = site._server
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _client(base_url: str, **kwargs: Any) -> IefClient:
    kwargs.setdefault("retry", NO_RETRIES)
    return IefClient(base_url, auth=TokenAuth(TOKEN), **kwargs)


def _page(jobs: list[dict[str, Any]], total: int) -> web.Response:
    return web.Response(
        body=orjson.dumps({"job_count": total, "jobs": jobs}),
        content_type="application/json",
    )


@pytest.fixture(name="tls_server_context")
def _tls() -> tuple[ssl.SSLContext, trustme.CA]:
    """A server context with a certificate for 127.0.0.1 from a private CA."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context, ca


def _counting() -> tuple[Handler, list[str]]:
    """A handler answering an empty page, and the paths it heard."""
    heard: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        heard.append(request.path)
        return _page([], 0)

    return answer, heard


class TestRedirects:
    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    async def test_a_redirect_is_not_followed(self, status: int) -> None:
        """A 3xx to another host is an ApiError; the other host hears nothing."""
        stolen: list[dict[str, str]] = []

        async def thief(request: web.Request) -> web.Response:
            stolen.append(dict(request.headers))
            return _page([], 0)

        async with _serve(thief) as thief_url:

            async def redirector(request: web.Request) -> web.Response:
                return web.Response(
                    status=status, headers={"Location": f"{thief_url}/steal"}
                )

            async with _serve(redirector) as url, _client(url) as ief:
                with pytest.raises(ApiError) as info:
                    await ief.count_jobs(PROJECT)

        assert status == info.value.status
        assert [] == stolen
        assert TOKEN not in str(info.value)
        assert f"{thief_url}/steal" == info.value.location


class TestSecretsStayOut:
    async def test_no_log_record_at_any_level_carries_the_token(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A listing through every fault, logged at DEBUG by every logger."""
        caplog.set_level(logging.DEBUG)
        faults = Faults(
            server_error_rate=0.3,
            throttled_rate=0.1,
            drop_rate=0.1,
            truncate_rate=0.1,
            retry_after="0",
        )
        retry = RetryPolicy(attempts=10, sleep=no_sleep)
        async with Emulator(projects=2, jobs=300, faults=faults) as emulator:
            async with IefClient(
                emulator.base_url,
                auth=TokenAuth(emulator.token),
                retry=retry,
                page_size=20,
            ) as ief:
                count = sum([1 async for _ in ief.iter_jobs_many(emulator.project_ids)])
                with pytest.raises(ApiError) as info:
                    await ief.count_jobs("someone-elses-project")

        assert 600 == count
        assert caplog.records  # the faults did log: the check is not vacuous
        assert emulator.token not in caplog.text
        text = "".join(traceback.format_exception(info.value))
        assert emulator.token not in text

    async def test_a_transport_error_chains_nothing_that_holds_headers(self) -> None:
        """aiohttp's errors can carry the request; ours never chain them in."""

        async def hang_up(request: web.Request) -> web.StreamResponse:
            assert request.transport is not None
            request.transport.close()
            return web.Response()

        async with _serve(hang_up) as url, _client(url) as ief:
            with pytest.raises(TransportError) as info:
                await ief.count_jobs(PROJECT)

        assert info.value.__cause__ is None
        assert info.value.__suppress_context__
        assert TOKEN not in "".join(traceback.format_exception(info.value))


class TestSize:
    async def test_a_declared_oversize_body_is_refused_before_reading(self) -> None:
        async def big(_: web.Request) -> web.Response:
            return _page(wire_jobs(1000), 1000)  # about 300 KB

        async with _serve(big) as url, _client(url, max_body_size=50_000) as ief:
            with pytest.raises(TransportError, match="exceeds max_body_size") as info:
                await ief.count_jobs(PROJECT)

        assert not info.value.retryable

    async def test_an_unsized_oversize_body_is_refused(self) -> None:
        async def streamed(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(100):
                await response.write(b" " * 10_000)
            return response

        async with _serve(streamed) as url, _client(url, max_body_size=50_000) as ief:
            with pytest.raises(TransportError, match="exceeds max_body_size"):
                await ief.count_jobs(PROJECT)

    async def test_a_compression_bomb_is_refused_and_not_retried(self) -> None:
        """10 KB of gzip that would expand to 10 MB stops at the 1 MB bound."""
        bomb = gzip.compress(b" " * 10_000_000)
        requests = 0

        async def gzipped(_: web.Request) -> web.Response:
            nonlocal requests
            requests += 1
            return web.Response(
                body=bomb,
                headers={
                    "Content-Encoding": "gzip",
                    "Content-Type": "application/json",
                },
            )

        retry = RetryPolicy(attempts=5, sleep=no_sleep)
        async with (
            _serve(gzipped) as url,
            _client(url, max_body_size=1_000_000, retry=retry) as ief,
        ):
            with pytest.raises(TransportError, match="exceeds max_body_size"):
                await ief.count_jobs(PROJECT)

        assert len(bomb) < 20_000
        assert 1 == requests


class TestLies:
    async def test_an_absurd_job_count_ends_at_the_first_empty_page(self) -> None:
        """job_count 10**12 over 250 real records: no runaway, no error; the walk
        stops at the first empty page, within one window of requests past it."""
        records = wire_jobs(250)
        offsets: list[int] = []

        async def liar(request: web.Request) -> web.Response:
            offset, limit = int(request.query["offset"]), int(request.query["limit"])
            offsets.append(offset)
            return _page(records[offset : offset + limit], 10**12)

        async with _serve(liar) as url, _client(url, concurrency=4) as ief:
            jobs = [j async for j in ief.iter_jobs(PROJECT, page_size=50)]

        assert [r["job_id"] for r in records] == [j.job_id for j in jobs]
        assert len(offsets) <= 250 // 50 + 4 + 1

    async def test_the_same_record_twice_is_yielded_once(self) -> None:
        records = wire_jobs(5)
        doubled = [records[0], records[0], *records[1:]]

        async def stutter(_: web.Request) -> web.Response:
            return _page(doubled, 5)

        async with _serve(stutter) as url, _client(url) as ief:
            jobs = await ief.list_jobs(PROJECT)

        assert [r["job_id"] for r in records] == [j.job_id for j in jobs]

    async def test_more_records_than_asked_are_cut_to_the_limit(self) -> None:
        records = wire_jobs(30)

        async def generous(_: web.Request) -> web.Response:
            return _page(records, 30)

        async with _serve(generous) as url, _client(url) as ief:
            jobs = await ief.list_jobs(PROJECT, max_items=7)

        assert [r["job_id"] for r in records[:7]] == [j.job_id for j in jobs]


class TestSlowServers:
    async def test_headers_then_silence_is_cut_by_the_read_timeout(self) -> None:
        async def silent(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Length": "100"})
            await response.prepare(request)
            await asyncio.sleep(10)
            return response

        timeout = aiohttp.ClientTimeout(total=5, sock_read=0.1)
        async with _serve(silent) as url, _client(url, timeout=timeout) as ief:
            with pytest.raises(TransportError, match="timed out"):
                async with asyncio.timeout(2):
                    await ief.count_jobs(PROJECT)

    async def test_a_byte_at_a_time_is_cut_by_the_total_timeout(self) -> None:
        """Each byte comes before the read timeout; the total one still ends it."""

        async def dripping(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Length": "1000"})
            await response.prepare(request)
            for _ in range(1000):
                await response.write(b" ")
                await asyncio.sleep(0.02)
            return response

        timeout = aiohttp.ClientTimeout(total=0.3, sock_read=0.2)
        async with _serve(dripping) as url, _client(url, timeout=timeout) as ief:
            with pytest.raises(TransportError, match="timed out"):
                async with asyncio.timeout(2):
                    await ief.count_jobs(PROJECT)

    async def test_a_deadline_around_a_listing_keeps_what_arrived(self) -> None:
        """Pages before a stuck one are delivered; the deadline ends the rest."""
        records = wire_jobs(100)

        async def stuck_at_40(request: web.Request) -> web.Response:
            offset, limit = int(request.query["offset"]), int(request.query["limit"])
            if offset + limit > 41:  # any page yielding a record from 40 on
                # (a later page also peeks at the record past its end)
                await asyncio.sleep(10)
            return _page(records[offset : offset + limit], 100)

        got: list[str] = []
        async with _serve(stuck_at_40) as url, _client(url, concurrency=2) as ief:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    async for job in ief.iter_jobs(PROJECT, page_size=20):
                        got.append(job.job_id)  # noqa: PERF401 (kept on timeout)
            assert 0 == ief.limiter.in_flight

        assert [r["job_id"] for r in records[:40]] == got


class TestBorrowedSession:
    """A session the caller lends keeps its own defaults for its other uses;
    the client's timeout and TLS checks still hold for the client's requests."""

    async def test_the_client_timeout_holds(self) -> None:
        async def slow(_: web.Request) -> web.Response:
            await asyncio.sleep(10)
            return _page([], 0)

        async with (
            _serve(slow) as url,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session,
            _client(url, session=session, timeout=0.05) as ief,
        ):
            with pytest.raises(TransportError, match="timed out"):
                async with asyncio.timeout(2):
                    await ief.count_jobs(PROJECT)

    async def test_an_unverifying_connector_still_verifies(
        self, tls_server_context: tuple[ssl.SSLContext, trustme.CA]
    ) -> None:
        """verify_ssl=True (the default) over a session whose connector has
        ssl=False: the untrusted certificate is refused, the token unsent."""
        answer, heard = _counting()
        context, _ = tls_server_context
        connector = aiohttp.TCPConnector(ssl=False)
        async with (
            _serve(answer, context) as url,
            aiohttp.ClientSession(connector=connector) as session,
            _client(url, session=session) as ief,
        ):
            with pytest.raises(TransportError, match="TLS"):
                await ief.count_jobs(PROJECT)
            # the session itself, for other uses, is left as it was lent
            async with session.get(f"{url}/other") as response:
                assert 200 == response.status

        assert ["/other"] == heard

    async def test_a_connector_with_its_own_ca_is_respected(
        self, tls_server_context: tuple[ssl.SSLContext, trustme.CA]
    ) -> None:
        """A connector that verifies against a private CA keeps doing so."""
        server_context, ca = tls_server_context
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)

        async def answer(_: web.Request) -> web.Response:
            return _page([], 4)

        async with (
            _serve(answer, server_context) as url,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=trusting)
            ) as session,
            _client(url, session=session) as ief,
        ):
            assert 4 == await ief.count_jobs(PROJECT)


class TestInput:
    async def test_query_values_cannot_add_parameters(self) -> None:
        """A job type with &, = or # in it stays one value; such a sort is refused."""
        seen: list[tuple[str, dict[str, list[str]]]] = []

        async def record(request: web.Request) -> web.Response:
            query: dict[str, list[str]] = {}
            for key, value in request.query.items():
                query.setdefault(key, []).append(value)
            seen.append((request.path, query))
            return _page([], 0)

        job_type = "node_upgrade&limit=1000#x"
        sort = "created_at:desc&offset=9/../x"
        async with _serve(record) as url, _client(url) as ief:
            with pytest.raises(ValueError, match="sort must be"):
                ief.iter_jobs(PROJECT, sort=sort)
            await ief.list_jobs(PROJECT, job_type=job_type, sort="created_at:asc")

        [(path, query)] = seen
        assert f"/v2/{PROJECT}/productmgr/jobs" == path
        assert {
            "job_type": [job_type],
            "sort": ["created_at:asc"],
            "limit": ["101"],
            "offset": ["0"],
        } == query

    @pytest.mark.parametrize(
        "project_id", ["../admin", "p/../../x", "p?x=1", "p#f", "", "p%2F", "é"]
    )
    async def test_a_project_id_cannot_change_the_path(self, project_id: str) -> None:
        async with _client("http://127.0.0.1:9") as ief:
            with pytest.raises(ValueError, match="project_id"):
                await ief.list_jobs(project_id)


class TestTls:
    async def test_an_untrusted_certificate_is_refused_by_default(
        self, tls_server_context: tuple[ssl.SSLContext, trustme.CA]
    ) -> None:
        answer, heard = _counting()
        context, _ = tls_server_context
        retry = RetryPolicy(attempts=5, sleep=no_sleep)
        async with _serve(answer, context) as url, _client(url, retry=retry) as ief:
            with pytest.raises(TransportError, match="TLS") as info:
                await ief.count_jobs(PROJECT)

        assert [] == heard  # the token was never sent
        assert 1 == info.value.attempts  # a certificate does not get better

    @pytest.mark.parametrize("borrowed", [False, True])
    async def test_verification_off_only_when_asked(
        self, tls_server_context: tuple[ssl.SSLContext, trustme.CA], borrowed: bool
    ) -> None:
        """verify_ssl=False reaches the request, on a borrowed session too."""

        async def answer(_: web.Request) -> web.Response:
            return _page([], 3)

        context, _ = tls_server_context
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(_serve(answer, context))
            session = (
                await stack.enter_async_context(aiohttp.ClientSession())
                if borrowed
                else None
            )
            ief = await stack.enter_async_context(
                _client(url, verify_ssl=False, session=session)
            )
            assert 3 == await ief.count_jobs(PROJECT)
