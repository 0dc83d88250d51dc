"""
Credentials for IEF requests, behind one small protocol a user can implement too.

* `TokenAuth`: a ready IAM token, sent as ``X-Auth-Token``.

No provider's ``repr`` shows a secret.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Protocol, runtime_checkable

import attrs
from yarl import URL

__all__ = ["Auth", "TokenAuth"]


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


@attrs.frozen
class TokenAuth:
    """
    Send a ready IAM token as ``X-Auth-Token``.

    Example::

        auth = TokenAuth(os.environ["IEF_TOKEN"])
        assert repr(auth) == "TokenAuth()"
    """

    token: str = attrs.field(repr=False)

    async def apply(
        self,
        method: str,  # noqa: ARG002 (the protocol's signature)
        url: URL,  # noqa: ARG002
        headers: MutableMapping[str, str],
    ) -> None:
        """Set ``X-Auth-Token``."""
        headers["X-Auth-Token"] = self.token
