from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ief_jobs import (
    ApiError,
    AuthenticationError,
    NotFoundError,
    ServerError,
    ThrottledError,
)
from ief_jobs.errors import error_from_response, parse_retry_after


class TestErrorFromResponse:
    @pytest.mark.parametrize(
        ("status", "code", "cls"),
        [
            (400, "IEF.100004", ApiError),
            (400, "IEF.011005", AuthenticationError),
            (401, "APIG.0301", AuthenticationError),
            (403, "APIGW.0303", AuthenticationError),
            (404, "APIGW.0101", NotFoundError),
            (429, "APIG.0308", ThrottledError),
            (500, "IEF.000001", ServerError),
            (503, None, ServerError),
        ],
    )
    def test_status_maps_to_class(
        self, status: int, code: str | None, cls: type
    ) -> None:
        """Each status (and IEF's auth code under 400) maps to its error class."""
        body = f'{{"error_code": "{code}", "error_msg": "m"}}'.encode() if code else b""
        error = error_from_response(
            status, body, {"X-Request-Id": "r-7"}, project_id="p", offset=10
        )

        assert type(error) is cls
        assert (status, code, "r-7", "p", 10) == (
            error.status,
            error.error_code,
            error.request_id,
            error.project_id,
            error.offset,
        )

    def test_html_body_gives_status_and_text(self) -> None:
        """An HTML page from a load balancer still gives a ServerError with its text."""
        error = error_from_response(
            502, b"<html><body>Bad   Gateway</body></html>", {}, project_id="p"
        )

        assert isinstance(error, ServerError)
        assert "<html><body>Bad Gateway</body></html>" == error.error_msg
        assert error.error_code is None
        assert "HTTP 502" in str(error)

    def test_gateway_request_id_in_body(self) -> None:
        """A request id only in the body (gateway errors) is kept."""
        error = error_from_response(401, b'{"request_id": "g-1"}', {})

        assert "g-1" == error.request_id


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            (None, None),
            ("", None),
            ("3", 3.0),
            ("1.5", 1.5),
            ("-4", 0.0),
            ("nonsense", None),
            ("Thu, 26 Nov 2026 12:00:10 GMT", 10.0),
            ("Thu, 26 Nov 2026 11:00:00 GMT", 0.0),
            ("999999", 3600.0),
        ],
    )
    def test_seconds_or_http_date(
        self, value: str | None, seconds: float | None
    ) -> None:
        """Retry-After is read as delta-seconds or an HTTP date, relative to now."""
        now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)

        assert seconds == parse_retry_after(value, now=now)

    def test_throttled_error_carries_it(self) -> None:
        """A 429 carries the parsed Retry-After."""
        error = error_from_response(429, b"{}", {"Retry-After": "2"})

        assert isinstance(error, ThrottledError)
        assert 2.0 == error.retry_after
