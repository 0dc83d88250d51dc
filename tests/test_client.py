from __future__ import annotations

import traceback

import aiohttp
import pytest
from aioresponses import aioresponses

from _support import ENDPOINT, PROJECT, TOKEN, list_url, page_body, wire_jobs
from ief_jobs import (
    ApiError,
    AuthenticationError,
    DecodeError,
    IefClient,
    JobType,
    NotFoundError,
    ServerError,
    SortOrder,
    ThrottledError,
    TokenAuth,
    TransportError,
)


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
            job_type="node_upgrade", limit=50, offset=0, sort="created_at:asc"
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
        mocked.get(list_url(limit=100, offset=0), body=page_body(0, []))

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
            list_url(limit=100, offset=0),
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
                list_url(limit=100, offset=0),
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
            list_url(limit=100, offset=0),
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
            list_url(limit=100, offset=0),
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
        mocked.get(list_url(limit=2, offset=0), body=page_body(4, wire_jobs(2)))
        # a later page asks from one record before its own start, and the
        # last one (ending at job_count) for one more, to tell a stale count
        mocked.get(list_url(limit=4, offset=1), body=b'{"job_count": 4}')

        with pytest.raises(DecodeError) as info:
            [j async for j in client.iter_jobs(PROJECT, page_size=2)]

        assert (PROJECT, 2) == (info.value.project_id, info.value.offset)

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
            list_url(limit=100, offset=0),
            exception=aiohttp.ClientConnectionError(f"X-Auth-Token: {TOKEN}"),
            repeat=True,
        )

        with pytest.raises(TransportError) as info:
            await client.list_jobs(PROJECT)

        text = "".join(traceback.format_exception(info.value))
        assert TOKEN not in text
        assert TOKEN not in repr(info.value)

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
