"""
A hostile server on 127.0.0.1 that echoes every request back (its headers,
query and body) in every error shape, on every call: nothing the client holds
or sent as a credential may reach an error, a log record or the CLI's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import pickle
import threading
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import attrs
import pytest
from aiohttp import web
from click.testing import CliRunner
from yarl import URL

from _support import PROJECT, no_sleep
from ief_jobs import (
    AkSkAuth,
    Auth,
    IamPasswordAuth,
    IefClient,
    IefError,
    RetryPolicy,
    TokenAuth,
)
from ief_jobs.cli import main
from ief_jobs.errors import SERVER_TEXT_MAX

# characters a percent-encoder or a JSON writer changes: the echo must be found
# in every spelling
TOKEN = "MIIE+super/secret=token-123"  # noqa: S105 (fakes, checked to never leak)
SECRET_KEY = "sk+SECRET/key=value-456"  # noqa: S105
SECURITY_TOKEN = "sec+TEMP/token=789"  # noqa: S105
PASSWORD = 'pass "word" +/= 0'  # noqa: S105
ISSUED = "iam+ISSUED/token=abc"
JOB = "job-1"
SHAPES = ("json", "nested", "html", "plain", "redirect", "undecodable", "huge")


@attrs.define
class Echo:
    """The hostile server: answers every request in *shape*, echoing it."""

    shape: str
    iam_fails: bool = False
    html_status: int = 502  # retried: the retry's log line is checked too
    heard: list[str] = attrs.Factory(list)  # every credential header it got

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = (await request.read()).decode()
        for name in ("X-Auth-Token", "Authorization", "X-Security-Token"):
            if name in request.headers:
                self.heard.append(request.headers[name])
        if request.method == "POST" and not self.iam_fails:
            return web.json_response(
                {"token": {"expires_at": "2999-01-01T00:00:00Z"}},
                status=201,
                headers={"X-Subject-Token": ISSUED},
            )
        lines = [f"{k}: {v}" for k, v in request.headers.items()]
        echo = "\n".join([*lines, request.query_string, request.path_qs, body])
        return self.answer(echo, "; ".join(lines))

    def answer(self, echo: str, one_line: str) -> web.Response:
        headers = {"X-Request-Id": one_line}
        if self.shape == "json":
            data = {"error_code": echo, "error_msg": echo, "request_id": echo}
            return web.json_response(data, status=400, headers={})
        if self.shape == "nested":
            nested = {"error": {"code": echo, "message": echo, "request_id": echo}}
            return web.json_response(nested, status=403, headers=headers)
        if self.shape == "html":
            html = f"<html><body><h1>502</h1><pre>{echo}</pre></body></html>"
            return web.Response(
                text=html,
                status=self.html_status,
                content_type="text/html",
                headers=headers,
            )
        if self.shape == "plain":
            return web.Response(text=echo, status=401, headers=headers)
        if self.shape == "redirect":
            where = f"http://127.0.0.1:9/{quote(one_line)}?{quote(one_line)}"
            headers["Location"] = where
            return web.Response(status=302, headers=headers)
        if self.shape == "undecodable":  # a 200 whose body is not the JSON
            return web.Response(text=f"<p>{echo}</p>", headers=headers)
        # a long message with the echo at its end, past any cut
        long = "x" * 10_000 + echo
        return web.json_response({"error_code": long, "error_msg": long}, status=400)


@contextlib.asynccontextmanager
async def _serve(echo: Echo) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


class _OwnAuth:
    """An Auth of a user's own, with no secrets(): masked by what it sent."""

    async def apply(self, method: str, url: URL, headers: dict[str, str]) -> None:
        headers["x-auth-token"] = TOKEN  # any case: header names are not


def _auth(kind: str, url: str) -> Auth:
    if kind == "own":
        return _OwnAuth()
    if kind == "token":
        return TokenAuth(TOKEN)
    if kind == "aksk":
        return AkSkAuth("AKIDEXAMPLE", SECRET_KEY, security_token=SECURITY_TOKEN)
    return IamPasswordAuth("bot", PASSWORD, "account", iam_endpoint=url)


def _secrets(echo: Echo) -> set[str]:
    """Every credential, and every credential header as the server heard it."""
    found = {TOKEN, SECRET_KEY, SECURITY_TOKEN, PASSWORD, ISSUED, *echo.heard}
    for value in echo.heard:  # an AK/SK signature, on its own
        if value.startswith("SDK-HMAC-SHA256"):
            found.update(p.split("=", 1)[1] for p in value.split(", ") if "=" in p)
    spelled = {quote(s, safe="") for s in found} | {quote(s) for s in found}
    return {s for s in found | spelled if len(s) >= 8}


def _texts(error: BaseException) -> Iterator[str]:
    """Everything an error shows or carries: str, repr, fields, pickle, chain."""
    yield str(error)
    yield repr(error)
    yield "".join(traceback.format_exception(error))
    yield pickle.dumps(error).decode("latin-1")
    yield repr(copy.copy(error).__dict__)
    if attrs.has(type(error)):
        for field in attrs.fields(type(error)):
            yield repr(getattr(error, field.name))
    for sub in getattr(error, "exceptions", ()):
        yield from _texts(sub)


def _leaks(texts: Iterator[str], secrets: set[str]) -> list[str]:
    return sorted({s for text in texts for s in secrets if s in text})


async def _call(ief: IefClient, call: str) -> None:
    if call == "list":
        await ief.list_jobs(PROJECT)
    else:
        await ief.get_job(PROJECT, JOB)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["token", "aksk", "iam", "own"])
@pytest.mark.parametrize("call", ["list", "show"])
async def test_no_echo_reaches_an_error_or_a_log(
    shape: str, kind: str, call: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever shape the echo takes, and whichever credential was sent, the
    error and every log record (DEBUG, every logger) show none of it, and each
    text the server chose is kept to 4 KiB."""
    caplog.set_level(logging.DEBUG)
    echo = Echo(shape)
    retry = RetryPolicy(attempts=2, sleep=no_sleep)  # a retry logs the error
    async with _serve(echo) as url:
        async with IefClient(url, auth=_auth(kind, url), retry=retry) as ief:
            with pytest.raises(IefError) as info:
                await _call(ief, call)

    assert echo.heard  # the server did get credentials to echo
    secrets = _secrets(echo)
    assert [] == _leaks(_texts(info.value), secrets)
    assert [] == _leaks(iter([caplog.text]), secrets)
    for field in attrs.fields(type(info.value)):
        value = getattr(info.value, field.name)
        if isinstance(value, str):
            assert len(value.encode()) <= SERVER_TEXT_MAX, field.name


@pytest.mark.parametrize("shape", SHAPES)
async def test_an_iam_echo_reaches_no_error(
    shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    """IAM refusing the token request in any shape, echoing the password it
    was sent, puts the password in no error and no log record."""
    caplog.set_level(logging.DEBUG)
    echo = Echo(shape, iam_fails=True)
    async with _serve(echo) as url:
        auth = IamPasswordAuth("bot", PASSWORD, "account", iam_endpoint=url)
        async with IefClient(url, auth=auth, retry=RetryPolicy(attempts=1)) as ief:
            with pytest.raises(IefError) as info:
                await ief.count_jobs(PROJECT)

    secrets = _secrets(echo)
    assert "IAM refused" in str(info.value)  # IAM's error, not IEF's
    assert [] == _leaks(_texts(info.value), secrets)
    assert [] == _leaks(iter([caplog.text]), secrets)


@pytest.fixture(name="hostile")
def _hostile() -> Iterator[tuple[str, Echo]]:
    """The echoing server on its own loop in a thread: the CLI runs asyncio.run."""
    echo = Echo("json")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    url: list[str] = []
    stop = loop.create_future()

    async def serve() -> None:
        async with _serve(echo) as base:
            url.append(base)
            ready.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    ready.wait(10)
    yield url[0], echo
    loop.call_soon_threadsafe(stop.set_result, None)
    thread.join(10)
    loop.close()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "command", [["list", PROJECT], ["count", PROJECT], ["show", PROJECT, JOB]]
)
@pytest.mark.parametrize("kind", ["token", "aksk"])
def test_no_echo_reaches_the_cli(
    hostile: tuple[str, Echo], shape: str, command: list[str], kind: str
) -> None:
    """The CLI's stdout and stderr show no credential, whatever the echo."""
    url, echo = hostile
    echo.shape = shape
    echo.html_status = 500  # not retried: the CLI's retries really sleep
    env = {"IEF_ENDPOINT": url, "IEF_TOKEN": None, "IEF_REGION": None}
    if kind == "token":
        env |= {"IEF_TOKEN": TOKEN, "HUAWEICLOUD_SDK_AK": None}
    else:
        env |= {
            "HUAWEICLOUD_SDK_AK": "AKIDEXAMPLE",
            "HUAWEICLOUD_SDK_SK": SECRET_KEY,
            "HUAWEICLOUD_SDK_SECURITY_TOKEN": SECURITY_TOKEN,
        }
    result = CliRunner().invoke(main, command, env=env)

    assert 1 == result.exit_code, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("ief-jobs: error: ")
    assert [] == _leaks(iter([result.stdout, result.stderr]), _secrets(echo))
