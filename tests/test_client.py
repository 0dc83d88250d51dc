from __future__ import annotations

import contextlib
import math
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from _support import ENDPOINT, PROJECT, TOKEN, list_url, page_body, wire_jobs
from ief_jobs import (
    ApiError,
    AuthenticationError,
    DecodeError,
    IefClient,
    JobPage,
    JobType,
    NotFoundError,
    ServerError,
    SortOrder,
    ThrottledError,
    TokenAuth,
    TransportError,
)
from ief_jobs import transport as transport_module
from ief_jobs.models import ListQuery


def _sent(mocked: aioresponses) -> list[tuple[str, dict[str, str]]]:
    return [
        (str(url), dict(call.kwargs["headers"]))
        for (_, url), calls in mocked.requests.items()
        for call in calls
    ]


class TestRequests:
    async def test_url_and_headers(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """One page sends the documented path, query and headers, and nothing else."""
        url = list_url(
            job_type="node_upgrade", limit=51, offset=0, sort="created_at:asc"
        )
        mocked.get(url, body=page_body(0, []), headers={"X-Request-Id": "r-1"})

        pages = [
            p
            async for p in client.iter_pages(
                PROJECT,
                job_type=JobType.NODE_UPGRADE,
                sort=SortOrder.CREATED_AT_ASC,
                page_size=50,
            )
        ]

        assert [
            (
                str(url),
                {
                    "Content-Type": "application/json",
                    "X-Project-Id": PROJECT,
                    "X-Auth-Token": TOKEN,
                },
            )
        ] == _sent(mocked)
        assert "r-1" == pages[0].request_id

    async def test_optional_query_left_out(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """Without job_type and sort, only limit and offset are sent."""
        mocked.get(list_url(limit=101, offset=0), body=page_body(0, []))

        assert [] == await client.list_jobs(PROJECT)

    async def test_instance_id_default_and_override(self, mocked: aioresponses) -> None:
        """ief-instance-id goes out when set, and a call may override the default."""
        mocked.get(list_url(limit=1, offset=0), body=page_body(3, []), repeat=True)
        async with IefClient(
            ENDPOINT, auth=TokenAuth(TOKEN), instance_id="inst-a"
        ) as client:
            await client.count_jobs(PROJECT)
            await client.count_jobs(PROJECT, instance_id="inst-b")

        assert ["inst-a", "inst-b"] == [h["ief-instance-id"] for _, h in _sent(mocked)]

    async def test_count_is_one_cheap_request(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """count_jobs asks for one record and returns job_count."""
        mocked.get(list_url(limit=1, offset=0), body=page_body(1234, wire_jobs(1)))

        assert 1234 == await client.count_jobs(PROJECT)
        assert 1 == len(_sent(mocked))

    async def test_endpoint_with_base_path(self, mocked: aioresponses) -> None:
        """An endpoint with a path prefix keeps it."""
        mocked.get(
            list_url(endpoint=f"{ENDPOINT}/proxy", limit=1, offset=0),
            body=page_body(5, []),
        )
        async with IefClient(f"{ENDPOINT}/proxy/", auth=TokenAuth(TOKEN)) as client:
            assert 5 == await client.count_jobs(PROJECT)

    @pytest.mark.parametrize(
        ("endpoint", "sent"),
        [
            ("https://Ief.Example:443/a%20b", "https://ief.example/a%20b"),
            ("http://127.0.0.1:80", "http://127.0.0.1"),
            ("http://[::1]:8443/", "http://[::1]:8443"),
        ],
    )
    async def test_a_page_url_is_the_endpoint_as_parsed(
        self, mocked: aioresponses, endpoint: str, sent: str
    ) -> None:
        """A page's URL, assembled from parts, is what parsing the whole gives:
        a default port dropped, a host lower-cased, an escaped path kept."""
        url = list_url(endpoint=sent, job_type="node_upgrade", limit=1, offset=0)
        mocked.get(url, body=page_body(5, []))
        async with IefClient(endpoint, auth=TokenAuth(TOKEN)) as client:
            assert 5 == await client.count_jobs(PROJECT, job_type=JobType.NODE_UPGRADE)

        [(sent_url, _)] = _sent(mocked)
        assert str(url) == sent_url


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "code", "cls"),
        [
            (400, "IEF.100005", ApiError),
            (400, "IEF.011005", AuthenticationError),
            (401, "APIG.0301", AuthenticationError),
            (403, "APIGW.0301", AuthenticationError),
            (404, "APIGW.0101", NotFoundError),
            (500, "IEF.000001", ServerError),
        ],
    )
    async def test_status_to_error(
        self, mocked: aioresponses, client: IefClient, status: int, code: str, cls: type
    ) -> None:
        """An error answer raises its class with every field filled."""
        mocked.get(
            list_url(limit=101, offset=0),
            status=status,
            payload={"error_code": code, "error_msg": "nope"},
            headers={"X-Request-Id": "req-9"},
        )

        with pytest.raises(ApiError) as info:
            await client.list_jobs(PROJECT)

        error = info.value
        assert type(error) is cls
        assert (status, code, "nope", "req-9", PROJECT, 0) == (
            error.status,
            error.error_code,
            error.error_msg,
            error.request_id,
            error.project_id,
            error.offset,
        )
        assert 1 == len(_sent(mocked))  # not retried

    async def test_html_502_is_server_error(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """An HTML 502 from a load balancer is a ServerError, after retries."""
        for _ in range(3):
            mocked.get(
                list_url(limit=101, offset=0),
                status=502,
                body="<html>Bad Gateway</html>",
                content_type="text/html",
            )

        with pytest.raises(ServerError) as info:
            await client.list_jobs(PROJECT)

        assert "<html>Bad Gateway</html>" == info.value.error_msg
        assert 3 == info.value.attempts

    async def test_429_is_throttled_with_retry_after(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """A 429 that outlasts the retries is a ThrottledError with retry_after."""
        mocked.get(
            list_url(limit=101, offset=0),
            status=429,
            payload={"error_code": "APIG.0308", "error_msg": "slow down"},
            headers={"Retry-After": "4"},
            repeat=True,
        )

        with pytest.raises(ThrottledError) as info:
            await client.list_jobs(PROJECT)

        assert 4.0 == info.value.retry_after

    async def test_connection_error_is_transport_error(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """A failed connection is a TransportError naming project and offset."""
        mocked.get(
            list_url(limit=101, offset=0),
            exception=aiohttp.ClientConnectionError("boom"),
            repeat=True,
        )

        with pytest.raises(TransportError) as info:
            await client.list_jobs(PROJECT)

        assert (PROJECT, 0, 3) == (
            info.value.project_id,
            info.value.offset,
            info.value.attempts,
        )
        assert info.value.__cause__ is None

    async def test_undecodable_page_names_offset(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """A bad body on a later page names that page's offset."""
        # the first page peeks one record past its end (a stale count shows)
        mocked.get(list_url(limit=3, offset=0), body=page_body(4, wire_jobs(2)))
        # a later page asks from one record before its own start, and the
        # last one (ending at job_count) for one more, to tell a stale count
        mocked.get(list_url(limit=4, offset=1), body=b'{"job_count": 4}')

        with pytest.raises(DecodeError) as info:
            [j async for j in client.iter_jobs(PROJECT, page_size=2)]

        assert (PROJECT, 2) == (info.value.project_id, info.value.offset)

    async def test_a_walk_decodes_each_page_when_it_reaches_it(
        self,
        mocked: aioresponses,
        client: IefClient,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Pages read ahead wait as bodies: each is decoded right before its
        records are handed on, not on arrival (where the records would wait,
        spread over memory, walked by every garbage collection meanwhile)."""
        jobs = wire_jobs(6)
        mocked.get(list_url(limit=3, offset=0), body=page_body(6, jobs[:3]))
        # both later reads go out together (the client allows 32 in flight)
        mocked.get(list_url(limit=4, offset=1), body=page_body(6, jobs[1:5]))
        mocked.get(list_url(limit=4, offset=3), body=page_body(6, jobs[3:]))
        events: list[str] = []
        decode = transport_module.decode_page

        def spied(body: bytes, **where: Any) -> JobPage:
            events.append(f"decoded at {where['offset']}")
            return decode(body, **where)

        monkeypatch.setattr(transport_module, "decode_page", spied)

        async for job in client.iter_jobs(PROJECT, page_size=2):
            events.append(job.job_id)  # noqa: PERF401 (interleaved with decodes)

        ids = [job["job_id"] for job in jobs]
        assert [
            "decoded at 0",
            *ids[:2],
            "decoded at 1",
            *ids[2:4],
            "decoded at 3",
            *ids[4:],
        ] == events
        assert 3 == len(mocked.requests)

    async def test_redirect_is_not_followed(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """A 3xx is an error: the token is never carried to another host."""
        mocked.get(
            list_url(limit=1, offset=0),
            status=302,
            headers={"Location": "https://evil.example.com/steal"},
        )

        with pytest.raises(ApiError) as info:
            await client.count_jobs(PROJECT)

        assert 302 == info.value.status
        assert 1 == len(_sent(mocked))


class TestSecrets:
    async def test_token_in_no_error_text(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """Neither the error's text, repr nor traceback shows the token."""
        mocked.get(
            list_url(limit=101, offset=0),
            exception=aiohttp.ClientConnectionError(f"X-Auth-Token: {TOKEN}"),
            repeat=True,
        )

        with pytest.raises(TransportError) as info:
            await client.list_jobs(PROJECT)

        text = "".join(traceback.format_exception(info.value))
        assert TOKEN not in text
        assert TOKEN not in repr(info.value)

    async def test_a_page_held_for_later_holds_no_secret_in_view(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        """A body a walk decodes later is masked with its request's secrets then
        (a server echoing the token in its request id), and neither the page nor
        what it keeps to mask with shows the token meanwhile."""
        mocked.get(
            list_url(limit=3, offset=0),
            body=b"<html>maintenance</html>",
            headers={"X-Request-Id": f"echo {TOKEN}"},
        )
        read = client._transport.page_reader(PROJECT, ListQuery(page_size=2))

        page = await read(0, 3)
        assert isinstance(page, transport_module.UndecodedPage)
        with pytest.raises(DecodeError) as info:
            page.build()

        assert TOKEN not in repr(page)
        assert TOKEN not in repr(page.secrets)
        assert TOKEN not in str(info.value)
        assert "echo ***" == info.value.request_id

    def test_token_in_no_repr(self) -> None:
        """The client's and the auth's repr show no token."""
        auth = TokenAuth(TOKEN)

        assert "TokenAuth()" == repr(auth)
        assert TOKEN not in repr(IefClient(ENDPOINT, auth=auth))


class TestArguments:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"offset": -1},
            {"page_size": 0},
            {"max_items": -1},
            {"project_id": "../admin"},
            {"project_id": "p1?x=1"},
            {"project_id": ""},
        ],
    )
    async def test_bad_arguments_before_any_request(
        self, mocked: aioresponses, client: IefClient, kwargs: dict[str, object]
    ) -> None:
        """Arguments we can check raise ValueError before anything is sent."""
        project_id = kwargs.pop("project_id", PROJECT)

        with pytest.raises(ValueError):
            client.iter_pages(project_id, **kwargs)  # type: ignore[arg-type]

        assert [] == _sent(mocked)

    async def test_closed_client_is_an_error(self) -> None:
        """Using a closed client says so; closing twice is fine."""
        client = IefClient(ENDPOINT, auth=TokenAuth(TOKEN))
        await client.aclose()
        await client.aclose()

        with pytest.raises(RuntimeError, match="closed"):
            await client.count_jobs(PROJECT)

    async def test_borrowed_session_is_not_closed(self, mocked: aioresponses) -> None:
        """A session passed in is borrowed, never closed."""
        async with aiohttp.ClientSession() as session:
            async with IefClient(ENDPOINT, auth=TokenAuth(TOKEN), session=session):
                pass
            assert not session.closed

    def test_endpoint_must_be_http(self) -> None:
        """An endpoint that is not http(s), or carries credentials, is refused."""
        with pytest.raises(ValueError):
            IefClient("ftp://x", auth=TokenAuth(TOKEN))
        with pytest.raises(ValueError):
            IefClient("https://u:p@x", auth=TokenAuth(TOKEN))


class TestConstructorChecks:
    @pytest.mark.parametrize(
        ("kwargs", "error", "name"),
        [
            ({"auth": None}, TypeError, "auth"),
            ({"auth": TOKEN}, TypeError, "auth"),
            ({"endpoint": None}, TypeError, "endpoint"),
            ({"instance_id": ""}, ValueError, "instance_id"),
            ({"instance_id": 7}, TypeError, "instance_id"),
            ({"session": "shared"}, TypeError, "session"),
            ({"concurrency": 2.5}, TypeError, "concurrency"),
            ({"concurrency": True}, TypeError, "concurrency"),
            ({"concurrency": 0}, ValueError, "concurrency"),
            ({"page_size": 0}, ValueError, "page_size"),
            ({"page_size": "100"}, TypeError, "page_size"),
            ({"retry": 5}, TypeError, "retry"),
            ({"timeout": 0}, ValueError, "timeout"),
            ({"timeout": -1.0}, ValueError, "timeout"),
            ({"timeout": math.inf}, ValueError, "timeout"),
            ({"timeout": math.nan}, ValueError, "timeout"),
            ({"timeout": "5"}, TypeError, "timeout"),
            ({"timeout": None}, TypeError, "timeout"),
            ({"max_body_size": -1}, ValueError, "max_body_size"),
            ({"max_body_size": 0}, ValueError, "max_body_size"),
            ({"max_body_size": 1e6}, TypeError, "max_body_size"),
            ({"verify_ssl": "no"}, TypeError, "verify_ssl"),
            ({"adaptive": None}, TypeError, "adaptive"),
            ({"rate_limit": math.inf}, ValueError, "rate_limit"),
            ({"rate_limit": math.nan}, ValueError, "rate_limit"),
            ({"rate_limit": -3}, ValueError, "rate_limit"),
            ({"rate_limit": "10/s"}, TypeError, "rate_limit"),
        ],
    )
    def test_a_bad_argument_raises_in_the_constructor(
        self, kwargs: dict[str, object], error: type[Exception], name: str
    ) -> None:
        """Each argument is checked by the constructor, and the error names it."""
        arguments: dict[str, object] = {"auth": TokenAuth(TOKEN), **kwargs}
        endpoint = arguments.pop("endpoint", ENDPOINT)

        with pytest.raises(error, match=name):
            IefClient(endpoint, **arguments)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "build",
        [
            lambda: IefClient.for_region("cn-north-4", auth=None),
            lambda: IefClient.from_env({"IEF_REGION": "cn-north-4"}, auth=5),
            lambda: IefClient.from_env(
                {"IEF_TOKEN": "T", "IEF_REGION": "cn-north-4"}, retry=5
            ),
        ],
    )
    def test_the_other_constructors_check_alike(
        self, build: Callable[[], IefClient]
    ) -> None:
        with pytest.raises(TypeError):
            build()

    def test_a_region_that_is_not_text_is_named(self) -> None:
        with pytest.raises(TypeError, match="region"):
            IefClient.for_region(4, auth=TokenAuth(TOKEN))  # type: ignore[arg-type]


class TestTimeoutArgument:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            (5, aiohttp.ClientTimeout(total=5)),
            (0.25, aiohttp.ClientTimeout(total=0.25)),
            (
                aiohttp.ClientTimeout(total=9, sock_read=2),
                aiohttp.ClientTimeout(total=9, sock_read=2),
            ),
        ],
    )
    async def test_seconds_or_a_client_timeout_bound_each_request(
        self,
        mocked: aioresponses,
        given: float | aiohttp.ClientTimeout,
        expected: aiohttp.ClientTimeout,
    ) -> None:
        """timeout=5 is seconds for one whole request, sent with every request."""
        mocked.get(list_url(limit=1, offset=0), body=page_body(3, []))

        async with IefClient(ENDPOINT, auth=TokenAuth(TOKEN), timeout=given) as ief:
            assert 3 == await ief.count_jobs(PROJECT)

        [call] = [c for calls in mocked.requests.values() for c in calls]
        assert expected == call.kwargs["timeout"]

    async def test_a_borrowed_session_gets_the_timeout_per_request(
        self, mocked: aioresponses
    ) -> None:
        """A borrowed session's own (longer) timeout does not replace ours."""
        mocked.get(list_url(limit=1, offset=0), body=page_body(3, []))
        slow = aiohttp.ClientTimeout(total=300)

        async with aiohttp.ClientSession(timeout=slow) as session:
            async with IefClient(
                ENDPOINT, auth=TokenAuth(TOKEN), session=session, timeout=0.5
            ) as ief:
                await ief.count_jobs(PROJECT)

        [call] = [c for calls in mocked.requests.values() for c in calls]
        assert aiohttp.ClientTimeout(total=0.5) == call.kwargs["timeout"]


def _calls(
    client: IefClient, project_id: object, **kwargs: object
) -> dict[str, Callable[[], object]]:
    """Each public listing method, called with the same project and options."""
    return {
        "iter_pages": lambda: client.iter_pages(project_id, **kwargs),  # type: ignore[arg-type]
        "iter_jobs": lambda: client.iter_jobs(project_id, **kwargs),  # type: ignore[arg-type]
        "iter_jobs_many": lambda: client.iter_jobs_many([project_id], **kwargs),  # type: ignore[arg-type, list-item]
        "list_jobs": lambda: client.list_jobs(project_id, **kwargs),  # type: ignore[arg-type]
        "count_jobs": lambda: client.count_jobs(project_id, **kwargs),  # type: ignore[arg-type]
    }


async def _call_now(call: Callable[[], object]) -> None:
    """Call; a coroutine (list_jobs, count_jobs) is awaited, an iterator is not
    advanced: a check made at the call raises here."""
    result = call()
    if isinstance(result, Awaitable):
        await result
    elif isinstance(result, AsyncGenerator):
        await result.aclose()


class TestCallsCheckFirst:
    @pytest.mark.parametrize(
        "method",
        ["iter_pages", "iter_jobs", "iter_jobs_many", "list_jobs", "count_jobs"],
    )
    @pytest.mark.parametrize(
        ("project_id", "error"),
        [
            ("../etc", ValueError),
            ("p1?x=1", ValueError),
            ("", ValueError),
            ("p/1", ValueError),
            (None, TypeError),
        ],
    )
    async def test_a_bad_project_id_raises_at_the_call(
        self,
        mocked: aioresponses,
        client: IefClient,
        method: str,
        project_id: object,
        error: type[Exception],
    ) -> None:
        """Every listing method refuses a project id that is not a plain path
        segment when it is called, not at the first anext, and sends nothing:
        TypeError for a wrong type, ValueError for a wrong value."""
        call = _calls(client, project_id)[method]

        with pytest.raises(error, match="project_id"):
            await _call_now(call)

        assert [] == _sent(mocked)

    @pytest.mark.parametrize("method", ["iter_pages", "iter_jobs", "iter_jobs_many"])
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"page_size": 0},
            {"max_items": -1},
            {"sort": "newest"},
            {"job_type": ""},
            {"instance_id": ""},
        ],
    )
    async def test_a_bad_option_raises_at_the_call(
        self,
        mocked: aioresponses,
        client: IefClient,
        method: str,
        kwargs: dict[str, object],
    ) -> None:
        call = _calls(client, PROJECT, **kwargs)[method]

        with pytest.raises(ValueError):
            call()

        assert [] == _sent(mocked)

    @pytest.mark.parametrize("project_ids", ["p1", b"p1"])
    async def test_one_project_id_as_a_string_is_a_type_error(
        self, mocked: aioresponses, client: IefClient, project_ids: object
    ) -> None:
        """iter_jobs_many("p1") would list the projects "p" and "1": refused."""
        with pytest.raises(TypeError, match="project_ids"):
            client.iter_jobs_many(project_ids)  # type: ignore[arg-type]

        assert [] == _sent(mocked)

    async def test_an_unknown_error_policy_raises_at_the_call(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        with pytest.raises(ValueError, match="errors"):
            client.iter_jobs_many([PROJECT], errors="ignore")  # type: ignore[arg-type]

        assert [] == _sent(mocked)


class TestStreams:
    @pytest.mark.parametrize("method", ["iter_pages", "iter_jobs", "iter_jobs_many"])
    async def test_an_async_generator_and_a_context_manager(
        self, mocked: aioresponses, client: IefClient, method: str
    ) -> None:
        """What the iter_* methods return iterates as before, and closes on exit
        from ``async with``; closing again is harmless."""
        mocked.get(list_url(limit=101, offset=0), body=page_body(2, wire_jobs(2)))
        stream = _calls(client, PROJECT)[method]()
        assert isinstance(stream, AsyncGenerator)

        async with stream as items:
            assert items is stream
            got = [item async for item in items]

        assert (1 if method == "iter_pages" else 2) == len(got)
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    async def test_aclosing_works_too(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        mocked.get(list_url(limit=101, offset=0), body=page_body(2, wire_jobs(2)))

        async with contextlib.aclosing(client.iter_jobs(PROJECT)) as jobs:
            first = await anext(jobs)
            second = await jobs.asend(None)

        assert first != second
        with pytest.raises(StopAsyncIteration):
            await anext(jobs)

    async def test_athrow_raises_inside(
        self, mocked: aioresponses, client: IefClient
    ) -> None:
        mocked.get(list_url(limit=101, offset=0), body=page_body(2, wire_jobs(2)))
        jobs = client.iter_jobs(PROJECT)
        await anext(jobs)

        with pytest.raises(KeyError):
            await jobs.athrow(KeyError("stop"))
