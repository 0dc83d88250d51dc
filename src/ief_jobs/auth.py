"""
Credentials for IEF requests, behind one small protocol a user can implement too.

* `TokenAuth`: a ready IAM token, sent as ``X-Auth-Token``.
* `IamPasswordAuth`: an IAM user's password, exchanged for a token per project,
  cached, refreshed ahead of its expiry and once on a 401.
* `AkSkAuth`: an access key pair, signing each request (``SDK-HMAC-SHA256``).
* `auth_from_env`: the one of these the environment describes, under the names
  Huawei Cloud's own SDKs use.

No provider's ``repr``, and no error they raise, shows a password, a secret
key, a token or a signature. Each provider here also tells the client which
secrets it holds (`SecretHoldingAuth.secrets`), so that anything a server says
is masked before it reaches an error, a log record or the CLI.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Collection, Mapping, MutableMapping
from datetime import datetime
from typing import Any, Final, Protocol, runtime_checkable

import aiohttp
import attrs
import orjson
from yarl import URL

from ._checks import (
    check_callable,
    check_credential,
    check_flag,
    check_instance,
    check_seconds,
    validator,
)
from ._closing import AsyncClosing
from ._signing import (
    authorization,
    canonical_request,
    format_sdk_date,
    signature,
)
from .errors import AuthenticationError, TransportError, mask_text, read_error_body

__all__ = [
    "AkSkAuth",
    "Auth",
    "IamPasswordAuth",
    "RefreshableAuth",
    "SecretHoldingAuth",
    "TokenAuth",
    "auth_from_env",
    "secrets_of",
]

DEFAULT_IAM_ENDPOINT: Final = "https://iam.myhuaweicloud.com"


@runtime_checkable
class Auth(Protocol):
    """
    Adds credentials to one outgoing request (a GET: there is no body to sign).

    *headers* already holds everything else the request will send, including
    ``X-Project-Id``; *url* carries the exact query string that will be sent.
    A provider that can get fresh credentials also implements `refresh`, which
    the client calls once when IEF answers 401.
    """

    async def apply(
        self, method: str, url: URL, headers: MutableMapping[str, str]
    ) -> None:
        """Add credentials to *headers* for a request of *method* to *url*."""


@runtime_checkable
class RefreshableAuth(Auth, Protocol):
    """An `Auth` that can replace credentials IEF refused."""

    async def refresh(self, url: URL, headers: MutableMapping[str, str]) -> bool:
        """
        Forget the credentials used for this request; True if retrying may help.
        """


@runtime_checkable
class SecretHoldingAuth(Auth, Protocol):
    """
    An `Auth` that says which secrets it holds, so the client can mask them.

    The client replaces each of them (and whatever credential headers it sent)
    with ``***`` in anything a server says before it reaches an error. An
    `Auth` without this method is masked by the headers it sent alone.

    .. versionadded:: 0.2.0
    """

    def secrets(self) -> Collection[str]:
        """Every secret held now: tokens, keys, passwords (never empty strings)."""


def secrets_of(auth: object) -> frozenset[str]:
    """
    The secrets *auth* says it holds; none for an `Auth` that cannot say.

    Example::

        assert frozenset({"s3cret"}) == secrets_of(TokenAuth("s3cret"))
    """
    if not isinstance(auth, SecretHoldingAuth):
        return frozenset()
    return frozenset(s for s in auth.secrets() if isinstance(s, str) and s)


def _credential(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_credential(attribute.name, value)


@attrs.frozen
class TokenAuth:
    """
    Send a ready IAM token as ``X-Auth-Token``.

    Example::

        auth = TokenAuth(os.environ["IEF_TOKEN"])
        assert repr(auth) == "TokenAuth()"
    """

    token: str = attrs.field(repr=False, validator=_credential)

    async def apply(
        self,
        method: str,  # noqa: ARG002 (the protocol's signature)
        url: URL,  # noqa: ARG002
        headers: MutableMapping[str, str],
    ) -> None:
        """Set ``X-Auth-Token``."""
        headers["X-Auth-Token"] = self.token

    def secrets(self) -> Collection[str]:
        """The token."""
        return (self.token,)


@attrs.frozen
class AkSkAuth:
    """
    Sign each request with an access key pair (``SDK-HMAC-SHA256``).

    Every header present when signing is signed, ``Host`` and ``X-Sdk-Date``
    included; the client sends the query string exactly as it was signed.
    Temporary credentials (from IAM's security token call) add
    *security_token*, sent as ``X-Security-Token``. *clock* gives Unix seconds
    for ``X-Sdk-Date`` (tests pass a fake; IEF refuses a date 15 minutes off).

    Example::

        auth = AkSkAuth(access_key, secret_key)
        assert repr(auth) == f"AkSkAuth(access_key={access_key!r})"
    """

    access_key: str = attrs.field(validator=_credential)
    secret_key: str = attrs.field(repr=False, validator=_credential)
    security_token: str | None = attrs.field(
        default=None,
        kw_only=True,
        repr=False,
        validator=attrs.validators.optional(_credential),
    )
    clock: Callable[[], float] = attrs.field(
        default=time.time,
        kw_only=True,
        repr=False,
        validator=validator(check_callable),
    )

    async def apply(
        self, method: str, url: URL, headers: MutableMapping[str, str]
    ) -> None:
        """Add ``Host``, ``X-Sdk-Date`` (and ``X-Security-Token``), then sign."""
        headers.pop("Authorization", None)
        headers["Host"] = url.raw_authority
        sdk_date = format_sdk_date(self.clock())
        headers["X-Sdk-Date"] = sdk_date
        if self.security_token is not None:
            headers["X-Security-Token"] = self.security_token
        canonical, signed = canonical_request(
            method, url.raw_path, url.raw_query_string, headers
        )
        headers["Authorization"] = authorization(
            self.access_key, signed, signature(self.secret_key, sdk_date, canonical)
        )

    def secrets(self) -> Collection[str]:
        """The secret key and the security token (the access key is not secret)."""
        if self.security_token is None:
            return (self.secret_key,)
        return (self.secret_key, self.security_token)


@attrs.frozen
class _Token:
    value: str = attrs.field(repr=False)
    expires_at: float  # Unix seconds


class IamPasswordAuth(AsyncClosing):
    """
    Get IAM tokens with a user's password, one per project, and keep them fresh.

    A token is asked for the first time a project is listed (``POST
    /v3/auth/tokens?nocatalog=true``, scoped to that project), cached, and
    replaced *refresh_margin* seconds before its ``expires_at``, or once when
    IEF answers 401. Requests waiting for the same project's token share one
    token request. *clock* gives Unix seconds (tests pass a fake).

    It holds an HTTP session for IAM; `IefClient` closes it when it closes
    (it is opened again if the auth is used after that).

    Example::

        auth = IamPasswordAuth("ops-bot", password, "my-account")
        async with IefClient.for_region("cn-north-4", auth=auth) as ief:
            ...

    Raises:
        AuthenticationError: IAM refused (its message, never the password).
        TransportError: IAM could not be reached (retried like any request).
    """

    __slots__ = (
        "_clock",
        "_locks",
        "_password",
        "_session",
        "_timeout",
        "_tokens",
        "_verify_ssl",
        "domain",
        "iam_endpoint",
        "refresh_margin",
        "token_requests",
        "user",
    )

    def __init__(
        self,
        user: str,
        password: str,
        domain: str,
        *,
        iam_endpoint: str = DEFAULT_IAM_ENDPOINT,
        refresh_margin: float = 600.0,
        clock: Callable[[], float] = time.time,
        timeout: aiohttp.ClientTimeout | None = None,
        verify_ssl: bool = True,
    ) -> None:
        for name, value in (("user", user), ("password", password), ("domain", domain)):
            check_credential(name, value, header=name != "password")
        check_instance("iam_endpoint", iam_endpoint, (str, URL), "a str or yarl.URL")
        endpoint = URL(iam_endpoint)
        if not endpoint.is_absolute() or endpoint.scheme not in {"http", "https"}:
            msg = f"iam_endpoint must be an http(s) URL, not {str(endpoint)!r}"
            raise ValueError(msg)
        check_seconds("refresh_margin", refresh_margin, minimum=-math.inf)
        check_callable("clock", clock)
        check_instance(
            "timeout", timeout, (aiohttp.ClientTimeout, type(None)), "a ClientTimeout"
        )
        check_flag("verify_ssl", verify_ssl)
        self.user = user
        self._password = password
        self.domain = domain
        self.iam_endpoint = endpoint
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._timeout = timeout or aiohttp.ClientTimeout(total=30, connect=10)
        self._verify_ssl = verify_ssl
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.token_requests = 0

    def __repr__(self) -> str:
        return (
            f"IamPasswordAuth(user={self.user!r}, domain={self.domain!r}, "
            f"iam_endpoint={str(self.iam_endpoint)!r})"
        )

    async def apply(
        self,
        method: str,  # noqa: ARG002 (the protocol's signature)
        url: URL,  # noqa: ARG002
        headers: MutableMapping[str, str],
    ) -> None:
        """Set ``X-Auth-Token`` to a fresh token for the request's project."""
        headers["X-Auth-Token"] = await self.token_for(_project_of(headers))

    def secrets(self) -> Collection[str]:
        """The password and every token IAM issued that is still cached."""
        return (self._password, *(token.value for token in self._tokens.values()))

    async def refresh(self, url: URL, headers: MutableMapping[str, str]) -> bool:  # noqa: ARG002
        """Forget the token IEF refused, so the next request gets a new one."""
        project_id = _project_of(headers)
        cached = self._tokens.get(project_id)
        if cached is not None and cached.value == headers.get("X-Auth-Token"):
            del self._tokens[project_id]
        return True

    async def token_for(self, project_id: str) -> str:
        """A token for *project_id*, from the cache while it is fresh."""
        cached = self._tokens.get(project_id)
        if cached is not None and self._fresh(cached):
            return cached.value
        lock = self._locks.setdefault(project_id, asyncio.Lock())
        async with lock:  # the first waiter asks IAM; the others find its token
            cached = self._tokens.get(project_id)
            if cached is None or not self._fresh(cached):
                cached = await self._request_token(project_id)
                self._tokens[project_id] = cached
            return cached.value

    def _fresh(self, token: _Token) -> bool:
        return self._clock() < token.expires_at - self.refresh_margin

    async def _request_token(self, project_id: str) -> _Token:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self.user,
                            "password": self._password,
                            "domain": {"name": self.domain},
                        }
                    },
                },
                "scope": {"project": {"id": project_id}},
            }
        }
        url = self.iam_endpoint.with_path(
            self.iam_endpoint.path.rstrip("/") + "/v3/auth/tokens"
        ).with_query(nocatalog="true")
        session = self._ensure_session()
        self.token_requests += 1
        try:
            async with session.post(
                url,
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json;charset=utf8"},
                allow_redirects=False,
            ) as response:
                status = response.status
                text = await response.read()
                subject = response.headers.get("X-Subject-Token")
                request_id = response.headers.get("X-Request-Id")
        except TimeoutError:
            raise TransportError(
                reason="IAM token request timed out", project_id=project_id
            ) from None
        except aiohttp.ClientError as exc:
            # not chained: the request in aiohttp's error holds the password
            raise TransportError(
                reason=f"IAM token request failed ({type(exc).__name__})",
                project_id=project_id,
            ) from None
        if status != 201 or not subject:  # noqa: PLR2004
            # IAM's answer may echo the request: the password, the user's tokens
            secrets = self.secrets()
            code, message, _ = read_error_body(text, secrets=secrets)
            raise AuthenticationError(
                status=status,
                error_code=code,
                error_msg=f"IAM refused the token request: {message or 'no message'}",
                request_id=mask_text(request_id, secrets),
                project_id=project_id,
            )
        return _Token(subject, _expires_at(text, default=self._clock() + 3600))

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._verify_ssl),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the IAM session (tokens stay cached). Idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _project_of(headers: Mapping[str, str]) -> str:
    project_id = headers.get("X-Project-Id")
    if not project_id:
        msg = "IamPasswordAuth needs the X-Project-Id header IefClient sends"
        raise ValueError(msg)
    return project_id


def _expires_at(body: bytes, *, default: float) -> float:
    try:
        value = orjson.loads(body)["token"]["expires_at"]
        return datetime.fromisoformat(value).timestamp()
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return default  # a token we cannot date is refreshed early, not trusted long


def auth_from_env(environ: Mapping[str, str] | None = None) -> Auth | None:
    """
    The credentials the environment names, or None.

    ``HUAWEICLOUD_SDK_AK`` and ``HUAWEICLOUD_SDK_SK`` (with
    ``HUAWEICLOUD_SDK_SECURITY_TOKEN`` for temporary ones) give `AkSkAuth`, as
    in Huawei Cloud's own SDKs; otherwise ``IEF_TOKEN`` gives `TokenAuth`.
    A value with surrounding whitespace or a line break (a stray ``\\r`` from
    a file written on Windows) is a `ValueError` naming the variable, never
    showing its value.

    Example::

        auth = auth_from_env({"IEF_TOKEN": "..."})
        assert isinstance(auth, TokenAuth)
    """
    env = os.environ if environ is None else environ
    access_key = env.get("HUAWEICLOUD_SDK_AK", "")
    secret_key = env.get("HUAWEICLOUD_SDK_SK", "")
    if access_key and secret_key:
        security_token = env.get("HUAWEICLOUD_SDK_SECURITY_TOKEN") or None
        _check_variables(
            HUAWEICLOUD_SDK_AK=access_key,
            HUAWEICLOUD_SDK_SK=secret_key,
            HUAWEICLOUD_SDK_SECURITY_TOKEN=security_token,
        )
        return AkSkAuth(access_key, secret_key, security_token=security_token)
    token = env.get("IEF_TOKEN", "")
    if token:
        _check_variables(IEF_TOKEN=token)
        return TokenAuth(token)
    return None


def _check_variables(**variables: str | None) -> None:
    # named as the user set them, not as the constructor's arguments
    for name, value in variables.items():
        if value is not None:
            check_credential(name, value)
