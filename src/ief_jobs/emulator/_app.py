"""
The emulator's aiohttp.web routes: IEF's list and show calls, its errors and its
faults.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Final

import attrs
import orjson
from aiohttp import web

from ief_jobs._signing import (
    canonical_query,
    canonical_request,
    parse_sdk_date,
    signature,
)
from ief_jobs.models import JobType, SortOrder

from ._data import ProjectJobs, Transition, job_detail
from ._faults import Faults, Stats, TokenBucket, roll

MAX_LIMIT: Final = 1000  # other IEF list calls accept 1..1000; the docs say none here
DEFAULT_LIMIT: Final = 10  # undocumented; the usual Huawei Cloud default
_JOB_TYPES: Final = frozenset(t.value for t in JobType)
_SORTS: Final = frozenset(s.value for s in SortOrder)
_SERVER_ERRORS: Final = (502, 503, 504)  # the temporary kind a gateway sends
_JSON: Final = "application/json"
_SDK_DATE_SKEW: Final = 15 * 60  # IEF refuses an X-Sdk-Date further off than this
_AUTHORIZATION: Final = re.compile(
    r"SDK-HMAC-SHA256 Access=([^,\s]+), SignedHeaders=([^,\s]+), "
    r"Signature=([0-9a-f]{64})"
)


@attrs.frozen
class IamUser:
    """An IAM user the emulator issues tokens to."""

    name: str
    password: str = attrs.field(repr=False)
    domain: str


@attrs.frozen
class AccessKey:
    """An access key pair the emulator accepts signatures from."""

    access_key: str
    secret_key: str = attrs.field(repr=False)
    security_token: str | None = attrs.field(default=None, repr=False)


def _iam_error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(
            {"error": {"code": status, "message": message, "title": "Unauthorized"}}
        ),
        content_type=_JSON,
    )


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _refused() -> web.Response:
    # IEF's one answer to a missing, wrong or expired token and a bad signature
    return error_response(401, "APIG.0301", "Incorrect IAM authentication information")


def error_response(status: int, code: str, message: str) -> web.Response:
    """An IEF-shaped error answer."""
    return web.Response(
        status=status,
        body=orjson.dumps({"error_code": code, "error_msg": message}),
        content_type=_JSON,
    )


class EmulatorApp:
    """The state behind the routes: data, token, knobs, counters."""

    def __init__(
        self,
        projects: dict[str, ProjectJobs],
        *,
        token: str,
        faults: Faults,
        seed: int,
        iam_user: IamUser,
        access_key: AccessKey,
        clock: Callable[[], float],
        token_ttl: float,
        running: bool,
        new_jobs_per_hour: float = 0.0,
        log: list[Transition] | None = None,
    ) -> None:
        self.projects = projects
        self.token = token
        self.iam_user = iam_user
        self.access_key = access_key
        self.clock = clock
        self.token_ttl = token_ttl
        self.issued: dict[str, tuple[str, float]] = {}  # token: (project, expiry)
        self.faults = faults
        self.stats = Stats()
        self.rng = random.Random(seed)  # the faults' dice
        self.log = log if log is not None else []
        if running:
            now = clock()
            for project in projects.values():
                project.start_running(now, new_jobs_per_hour=new_jobs_per_hour)
        self._bucket: TokenBucket | None = None
        self._bucket_key: tuple[float, int] | None = None

    def advance(self, projects: Iterable[ProjectJobs] | None = None) -> float:
        """Bring *projects* (all of them for None) to the clock's time; that time."""
        now = self.clock()
        for project in self.projects.values() if projects is None else projects:
            project.advance(now)
        return now

    def build(self) -> web.Application:
        """The aiohttp application serving the list and show calls."""
        app = web.Application(middlewares=[self._count, self._request_id])
        app.router.add_get("/v2/{project_id}/productmgr/jobs", self.list_jobs)
        app.router.add_get("/v2/{project_id}/productmgr/jobs/{job_id}", self.show_job)
        app.router.add_post("/v3/auth/tokens", self.issue_token)
        return app

    @web.middleware
    async def _request_id(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        request_id = uuid.uuid4().hex
        request["request_id"] = request_id
        try:
            response = await handler(request)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            response = error_response(404, "APIGW.0101", "The API does not exist")
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response

    @web.middleware
    async def _count(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await handler(request)
        finally:
            stats.in_flight -= 1
        stats.statuses[response.status] += 1
        return response

    def _too_many(self) -> web.Response:
        self.stats.faults["throttled"] += 1
        response = error_response(
            429,
            "APIG.0308",
            "The throttling threshold has been reached: "
            "policy user over ratelimit,limit:200,time:1 second",
        )
        if self.faults.retry_after is not None:
            response.headers["Retry-After"] = self.faults.retry_after
        return response

    def _throttled(self) -> bool:
        faults = self.faults
        if roll(self.rng, faults.throttled_rate):
            return True
        if faults.throttle_rate is None:
            return False
        now = asyncio.get_running_loop().time()
        key = (faults.throttle_rate, faults.throttle_burst)
        if self._bucket is None or self._bucket_key != key:
            self._bucket = TokenBucket(faults.throttle_rate, faults.throttle_burst, now)
            self._bucket_key = key
        return not self._bucket.take(now)

    def _authenticate(
        self, request: web.Request, project_id: str
    ) -> web.Response | None:
        # a token, when sent, decides: the official SDK signs with whatever
        # keys it holds and adds a token beside them
        if "Authorization" in request.headers and "X-Auth-Token" not in request.headers:
            return self._check_signature(request)
        token = request.headers.get("X-Auth-Token")
        if token == self.token:
            return None
        issued = self.issued.get(token or "")
        if issued is None or self.clock() >= issued[1]:
            return _refused()
        if issued[0] != project_id:
            return error_response(400, "IEF.011005", "Authentication failed")
        return None

    def _check_signature(self, request: web.Request) -> web.Response | None:
        match = _AUTHORIZATION.fullmatch(request.headers["Authorization"])
        key = self.access_key
        if match is None or match[1] != key.access_key:
            return _refused()
        sdk_date = request.headers.get("X-Sdk-Date", "")
        when = parse_sdk_date(sdk_date)
        if when is None:
            return _refused()
        if abs(self.clock() - when) > _SDK_DATE_SKEW:
            return error_response(
                401, "APIG.0303", "Incorrect app authentication information"
            )
        if key.security_token is not None and (
            request.headers.get("X-Security-Token") != key.security_token
        ):
            return _refused()
        names = match[2].split(";")
        if "host" not in names or "x-sdk-date" not in names:
            return _refused()
        try:
            signed = {name: request.headers[name] for name in names}
        except KeyError:
            return _refused()
        path, _, query = request.raw_path.partition("?")
        # the query must arrive exactly as the canonical form that was signed
        if query != canonical_query(query):
            return _refused()
        canonical, _ = canonical_request(request.method, path, query, signed)
        expected = signature(key.secret_key, sdk_date, canonical)
        if not secrets.compare_digest(expected, match[3]):
            return _refused()
        return None

    async def issue_token(self, request: web.Request) -> web.Response:
        """``POST /v3/auth/tokens``: IAM's password token call, scoped to a project."""
        try:
            body = orjson.loads(await request.read())
            identity = body["auth"]["identity"]
            user = identity["password"]["user"]
            project_id = body["auth"]["scope"]["project"]["id"]
            given = (user["name"], user["password"], user["domain"]["name"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _iam_error(400, "The request body is not a password token request.")
        expected = self.iam_user
        if "password" not in identity.get("methods", ()) or given != (
            expected.name,
            expected.password,
            expected.domain,
        ):
            return _iam_error(401, "The username or password is wrong.")
        if project_id not in self.projects:
            return _iam_error(401, "The project is not in this account.")
        now = self.clock()
        token = "MII" + secrets.token_urlsafe(48)
        self.issued[token] = (project_id, now + self.token_ttl)
        self.stats.tokens_issued += 1
        payload = {
            "token": {
                "expires_at": _iso(now + self.token_ttl),
                "issued_at": _iso(now),
                "methods": ["password"],
                "project": {"id": project_id},
                "user": {"name": expected.name, "domain": {"name": expected.domain}},
            }
        }
        return web.Response(
            status=201,
            body=orjson.dumps(payload),
            content_type=_JSON,
            headers={"X-Subject-Token": token},
        )

    async def _gate(self, request: web.Request) -> ProjectJobs | web.StreamResponse:
        """
        What every call of a project goes through, in a gateway's order: auth,
        the in-flight limit, latency, throttling, 5xx, dropped connections.
        The project, or the answer to send instead.
        """
        faults = self.faults
        project_id = request.match_info["project_id"]
        refused = self._authenticate(request, project_id)
        if refused is not None:
            return refused
        project = self.projects.get(project_id)
        if project is None:
            # a real token is scoped to one project; any other is refused this way
            return error_response(400, "IEF.011005", "Authentication failed")
        self.stats.requests_by_project[project_id] += 1
        stats = self.stats
        limit = faults.concurrency_limit
        if limit is not None and stats.in_flight > limit:
            return self._too_many()  # at once, as a gateway does
        stats.max_in_flight_served = max(stats.max_in_flight_served, stats.in_flight)
        if faults.latency or faults.latency_jitter:
            await asyncio.sleep(
                faults.latency + self.rng.uniform(0, faults.latency_jitter)
            )
        if self._throttled():
            return self._too_many()
        if roll(self.rng, faults.server_error_rate):
            self.stats.faults["server_error"] += 1
            return error_response(
                self.rng.choice(_SERVER_ERRORS), "IEF.000001", "Internal server error"
            )
        if roll(self.rng, faults.drop_rate):
            self.stats.faults["dropped"] += 1
            return await _drop(request)
        return project

    def _churn(self, project: ProjectJobs) -> None:
        # the world moves on the clock; the faults' creates and deletes per answer
        faults = self.faults
        now = self.advance([project])
        for _ in range(faults.creates_per_request):
            project.create(self.rng, now)
        for _ in range(faults.deletes_per_request):
            project.delete(now, rng=self.rng)

    async def _answer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """A 200 with *body*, unless a bad or cut body is due."""
        if roll(self.rng, self.faults.bad_body_rate):
            self.stats.faults["bad_body"] += 1
            return web.Response(
                body=b"<html><body>502 Bad Gateway</body></html>",
                content_type="text/html",
            )
        if roll(self.rng, self.faults.truncate_rate):
            self.stats.faults["truncated"] += 1
            return await _truncate(request, body)
        return web.Response(body=body, content_type=_JSON)

    async def list_jobs(self, request: web.Request) -> web.StreamResponse:
        """``GET /v2/{project_id}/productmgr/jobs``, with the knobs applied."""
        self.stats.requests_by_call["list"] += 1
        project = await self._gate(request)
        if isinstance(project, web.StreamResponse):
            return project
        query = request.query
        job_type = query.get("job_type")
        if job_type is not None and job_type not in _JOB_TYPES:
            return error_response(400, "IEF.100001", "Invalid job_type")
        sort = query.get("sort", SortOrder.CREATED_AT_DESC.value)
        if sort not in _SORTS:
            return error_response(400, "IEF.100001", "Invalid sort")
        offset = _int_param(query.get("offset", "0"))
        if offset is None or offset < 0:
            return error_response(400, "IEF.100004", "offset out of range")
        limit = _int_param(query.get("limit", str(DEFAULT_LIMIT)))
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            return error_response(400, "IEF.100005", "limit out of range")
        if self.faults.page_cap is not None:
            limit = min(limit, self.faults.page_cap)

        self._churn(project)
        matching = project.matching(job_type)
        total = len(matching)
        if sort == SortOrder.CREATED_AT_ASC:
            page = matching[offset : offset + limit]
        else:
            stop = max(total - offset, 0)
            page = matching[max(stop - limit, 0) : stop][::-1]
        return await self._answer(
            request, orjson.dumps({"job_count": total, "jobs": page})
        )

    async def show_job(self, request: web.Request) -> web.StreamResponse:
        """
        ``GET /v2/{project_id}/productmgr/jobs/{job_id}``: the job as the list
        gives it at this clock time, with its tasks and targets; 404 if unknown.
        """
        self.stats.requests_by_call["show"] += 1
        project = await self._gate(request)
        if isinstance(project, web.StreamResponse):
            return project
        self._churn(project)
        job_id = request.match_info["job_id"]
        job = project.find(job_id)
        if job is None:
            return error_response(
                404, "IEF.100404", f"The batch job {job_id} does not exist"
            )
        return await self._answer(request, orjson.dumps(job_detail(job)))


def _int_param(text: str) -> int | None:
    # int() would take " 1", "+1" and "1_0"; IEF takes digits only
    return int(text) if text.isdigit() else None


async def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection before any answer, as a dying backend does."""
    if request.transport is not None:
        request.transport.close()
    # aiohttp needs a response object; the closed transport means none is sent
    return web.Response(status=499)


async def _truncate(request: web.Request, body: bytes) -> web.StreamResponse:
    """Promise the whole body, send half, then close the connection."""
    response = web.StreamResponse(
        status=200, headers={"X-Request-Id": request["request_id"]}
    )
    response.content_type = _JSON
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return response
