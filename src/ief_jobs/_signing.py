"""
Huawei Cloud's ``SDK-HMAC-SHA256`` request signing, as pure functions.

The client, `AkSkAuth` and the emulator's signature check share them, so what
is signed, what is sent and what is checked are built by the same code:

* `encode_query` percent-encodes and sorts query pairs; the client sends exactly
  this string, so the query on the wire is byte for byte the one signed;
* `canonical_request` and `signature` follow the published algorithm (see
  ``tests/test_auth.py`` for the official vector and four IEF-shaped ones).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, unquote

__all__ = [
    "ALGORITHM",
    "authorization",
    "canonical_query",
    "canonical_request",
    "encode_query",
    "format_sdk_date",
    "parse_sdk_date",
    "signature",
]

ALGORITHM: Final = "SDK-HMAC-SHA256"
_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"


def _encode(text: str) -> str:
    # RFC 3986 unreserved characters stay; everything else is %XX (":" too)
    return quote(text, safe="")


def encode_query(pairs: Iterable[tuple[str, str]]) -> str:
    """
    The canonical query string: each name and value percent-encoded, sorted.

    Example::

        assert encode_query([("sort", "created_at:desc"), ("limit", "10")]) == (
            "limit=10&sort=created_at%3Adesc"
        )
    """
    return "&".join(
        f"{name}={value}"
        for name, value in sorted((_encode(n), _encode(v)) for n, v in pairs)
    )


def canonical_query(raw_query: str) -> str:
    """The canonical form of a query string as it arrived (percent-encoded)."""
    pairs = []
    for part in raw_query.split("&") if raw_query else ():
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return encode_query(pairs)


def _canonical_uri(raw_path: str) -> str:
    path = "/".join(_encode(unquote(segment)) for segment in raw_path.split("/"))
    return path if path.endswith("/") else f"{path}/"


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes = b"",
) -> tuple[str, str]:
    """
    The canonical request and its signed header names (``a;b;c``).

    *raw_path* and *raw_query* are as they appear on the wire (percent-encoded);
    every header in *headers* is signed.
    """
    canonical_headers = sorted(
        (name.lower(), value.strip()) for name, value in headers.items()
    )
    signed_headers = ";".join(name for name, _ in canonical_headers)
    lines = [
        method.upper(),
        _canonical_uri(raw_path),
        canonical_query(raw_query),
        "".join(f"{name}:{value}\n" for name, value in canonical_headers),
        signed_headers,
        hashlib.sha256(body).hexdigest(),
    ]
    return "\n".join(lines), signed_headers


def signature(secret_key: str, sdk_date: str, canonical: str) -> str:
    """Hex HMAC-SHA256, keyed with the secret key itself, of the string to sign."""
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{sdk_date}\n{digest}"
    return hmac.new(
        secret_key.encode(), string_to_sign.encode(), hashlib.sha256
    ).hexdigest()


def authorization(access_key: str, signed_headers: str, signature_hex: str) -> str:
    """The ``Authorization`` header's value."""
    return (
        f"{ALGORITHM} Access={access_key}, SignedHeaders={signed_headers}, "
        f"Signature={signature_hex}"
    )


def format_sdk_date(when: float) -> str:
    """``X-Sdk-Date`` for a Unix time: ``YYYYMMDDTHHMMSSZ`` in UTC."""
    return datetime.fromtimestamp(when, UTC).strftime(_DATE_FORMAT)


def parse_sdk_date(value: str) -> float | None:
    """The Unix time of an ``X-Sdk-Date``, or None if it is not one."""
    try:
        return datetime.strptime(value, _DATE_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
