"""The one argument contract: a wrong type is a TypeError, a wrong value a
ValueError, each naming the argument, raised where the argument is passed."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from _support import ENDPOINT, PROJECT, TOKEN, page_body, wire_jobs
from ief_jobs import (
    AkSkAuth,
    IamPasswordAuth,
    IefClient,
    RetryPolicy,
    TokenAuth,
)
from ief_jobs._checks import (
    MAX_PAGE_SIZE,
    check_credential,
    check_int,
    check_page_size,
    check_project_ids,
    check_seconds,
    check_text,
)


class TestChecks:
    @pytest.mark.parametrize(
        ("call", "error"),
        [
            (lambda: check_int("n", "1", minimum=0), TypeError),
            (lambda: check_int("n", True, minimum=0), TypeError),  # noqa: FBT003
            (lambda: check_int("n", -1, minimum=0), ValueError),
            (lambda: check_int("n", 11, minimum=0, maximum=10), ValueError),
            (lambda: check_page_size("n", 1001), ValueError),
            (lambda: check_page_size("n", 0), ValueError),
            (lambda: check_seconds("n", "1"), TypeError),
            (lambda: check_seconds("n", float("nan")), ValueError),
            (lambda: check_seconds("n", float("inf")), ValueError),
            (lambda: check_seconds("n", 0, above=True), ValueError),
            (lambda: check_seconds("n", 10**400), ValueError),  # past any float
            (lambda: check_seconds("n", 86_401, maximum=86_400), ValueError),
            (lambda: check_text("n", 5), TypeError),
            (lambda: check_text("n", ""), ValueError),
            (lambda: check_credential("n", " tok"), ValueError),
            (lambda: check_credential("n", b"tok"), TypeError),
            (lambda: check_project_ids("p1"), TypeError),
            (lambda: check_project_ids(5), TypeError),
        ],
    )
    def test_type_or_value_each_naming_the_argument(
        self, call: Callable[[], object], error: type[Exception]
    ) -> None:
        """Each check raises the one kind of error its failure calls for,
        naming the argument."""
        with pytest.raises(error, match=r"^(n|project_ids) "):
            call()

    def test_what_passes_comes_back(self) -> None:
        """A value that passes is returned, so a check reads as a conversion."""
        assert 1000 == check_page_size("page_size", MAX_PAGE_SIZE)
        assert 0.5 == check_seconds("t", 0.5)
        assert ["a", "b"] == check_project_ids(["a", "b", "a"])


def _client(**kwargs: Any) -> IefClient:
    return IefClient(ENDPOINT, auth=TokenAuth(TOKEN), **kwargs)


async def _at_the_call(call: Callable[[], object]) -> None:
    result = call()
    if isinstance(result, Awaitable):
        await result
    elif isinstance(result, AsyncGenerator):
        await result.aclose()


def _iam(**kwargs: Any) -> IamPasswordAuth:
    return IamPasswordAuth("user", "pw", "domain", **kwargs)


CONSTRUCTORS: list[tuple[Callable[[], object], type[Exception], str]] = [
    (lambda: _client(concurrency="x"), TypeError, "concurrency"),
    (lambda: _client(page_size="x"), TypeError, "page_size"),
    (lambda: _client(page_size=1001), ValueError, "page_size"),
    (lambda: _client(timeout="x"), TypeError, "timeout"),
    (lambda: _client(verify_ssl="yes"), TypeError, "verify_ssl"),
    (lambda: _client(rate_limit=float("inf")), ValueError, "rate_limit"),
    (lambda: _client(retry="x"), TypeError, "retry"),
    (lambda: _client(instance_id=5), TypeError, "instance_id"),
    (lambda: RetryPolicy(attempts="3"), TypeError, "attempts"),  # type: ignore[arg-type]
    (lambda: RetryPolicy(attempts=0), ValueError, "attempts"),
    (lambda: RetryPolicy(wait_max=-1), ValueError, "wait_max"),
    (lambda: RetryPolicy(sleep=5), TypeError, "sleep"),  # type: ignore[arg-type]
    (lambda: TokenAuth(5), TypeError, "token"),  # type: ignore[arg-type]
    (lambda: AkSkAuth("ak", "sk", clock=5), TypeError, "clock"),  # type: ignore[arg-type]
    (lambda: _iam(refresh_margin="x"), TypeError, "refresh_margin"),
    (lambda: _iam(verify_ssl="yes"), TypeError, "verify_ssl"),
    (lambda: _iam(clock=5), TypeError, "clock"),
    (lambda: _iam(iam_endpoint=5), TypeError, "iam_endpoint"),
]


@pytest.mark.parametrize(("call", "error", "name"), CONSTRUCTORS)
def test_constructors_keep_the_contract(
    call: Callable[[], object], error: type[Exception], name: str
) -> None:
    """The client, RetryPolicy and the auth classes: TypeError for a type,
    ValueError for a value, naming the argument, in the constructor."""
    with pytest.raises(error, match=name):
        call()


def _listing(client: IefClient) -> list[tuple[Callable[[], object], type, str]]:
    return [
        (lambda: client.iter_jobs(PROJECT, page_size=1001), ValueError, "page_size"),
        (lambda: client.iter_pages(PROJECT, offset="0"), TypeError, "offset"),
        (lambda: client.iter_jobs(PROJECT, sort=5), TypeError, "sort"),
        (
            lambda: client.iter_jobs_many([PROJECT], max_items=True),
            TypeError,
            "max_items",
        ),
        (lambda: client.iter_jobs_many([PROJECT], errors=1), ValueError, "errors"),
        (lambda: client.list_jobs(PROJECT, page_size=1001), ValueError, "page_size"),
        (lambda: client.list_jobs(PROJECT, offset=-1), ValueError, "offset"),
        (lambda: client.count_jobs(5), TypeError, "project_id"),
        (lambda: client.count_jobs(PROJECT, job_type=""), ValueError, "job_type"),
        (lambda: client.get_job(PROJECT, None), TypeError, "job_id"),
        (lambda: client.get_job(PROJECT, "../x"), ValueError, "job_id"),
        (lambda: client.iter_pages(PROJECT, on_progress=1), TypeError, "on_progress"),
        (
            lambda: client.iter_jobs_many([PROJECT], on_progress=1),
            TypeError,
            "on_progress",
        ),
    ]


@pytest.mark.parametrize("case", range(13))
async def test_listing_methods_keep_the_contract(
    mocked: aioresponses, client: IefClient, case: int
) -> None:
    """Every listing method and get_job: the same contract, at the call,
    before any request."""
    call, error, name = _listing(client)[case]

    with pytest.raises(error, match=name):
        await _at_the_call(call)

    assert {} == mocked.requests


async def test_list_jobs_takes_the_listing_options(
    mocked: aioresponses, client: IefClient
) -> None:
    """list_jobs takes page_size and offset, as iter_jobs does."""
    jobs = wire_jobs(5)
    mocked.get(
        URL(f"{ENDPOINT}/v2/{PROJECT}/productmgr/jobs").with_query(limit=4, offset=3),
        body=page_body(5, jobs[3:5]),
    )

    listed = await client.list_jobs(PROJECT, page_size=3, offset=3)

    assert [j["job_id"] for j in jobs[3:5]] == [job.job_id for job in listed]
    [(_, url)] = mocked.requests
    assert {"limit": "4", "offset": "3"} == dict(url.query)
