from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ief_jobs import (
    ApiError,
    AuthenticationError,
    DecodeError,
    IefError,
    ListingMovedError,
    NotFoundError,
    ServerError,
    ThrottledError,
    TransportError,
)
from ief_jobs.errors import (
    SERVER_TEXT_MAX,
    error_from_response,
    mask_text,
    parse_retry_after,
    read_error_body,
    redact,
)

SECRET = "MIIE+s3cret/token=="  # noqa: S105 (a fake, checked to never show)


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


class TestUnknownProject:
    def test_ief_011005_says_the_project_may_not_exist(self) -> None:
        """IEF.011005 (also an unknown project) names both causes in its message."""
        body = b'{"error_code": "IEF.011005", "error_msg": "Authentication failed"}'
        error = error_from_response(400, body, {}, project_id="p1", offset=0)

        assert str(error) == (
            "HTTP 400 IEF.011005: Authentication failed (project p1, offset 0); "
            "the project may not exist, or the credentials may not cover it"
        )

    def test_other_refusals_keep_their_message(self) -> None:
        """A 401 is about the credentials alone: no word about the project."""
        body = b'{"error_code": "APIG.0301", "error_msg": "Incorrect IAM"}'
        error = error_from_response(401, body, {}, project_id="p1")

        assert "HTTP 401 APIG.0301: Incorrect IAM (project p1)" == str(error)


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

    def test_server_error_carries_it(self) -> None:
        """A 503 carries the parsed Retry-After too, seconds or HTTP date."""
        now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
        seconds = error_from_response(503, b"", {"Retry-After": "2"}, now=now)
        date = error_from_response(
            503, b"", {"Retry-After": "Thu, 26 Nov 2026 12:00:02 GMT"}, now=now
        )

        assert isinstance(seconds, ServerError)
        assert isinstance(date, ServerError)
        assert (2.0, 2.0) == (seconds.retry_after, date.retry_after)

    def test_none_without_the_header(self) -> None:
        error = error_from_response(502, b"", {})

        assert isinstance(error, ServerError)
        assert error.retry_after is None


class TestErrorBody:
    @pytest.mark.parametrize(
        "body",
        [
            b'{"error_code": "APIGW.0106", "error_msg": "Orchestration failed"}',
            b'{"error": {"code": "APIGW.0106", "message": "Orchestration failed"}}',
        ],
    )
    def test_both_shapes_give_code_and_message(self, body: bytes) -> None:
        """The flat (IEF, API Gateway) and the nested (IAM) shape read alike."""
        error = error_from_response(400, body, {}, project_id="p")

        assert ("APIGW.0106", "Orchestration failed") == (
            error.error_code,
            error.error_msg,
        )
        assert "HTTP 400 APIGW.0106: Orchestration failed (project p)" == str(error)

    def test_a_nested_auth_code_is_an_authentication_error(self) -> None:
        body = b'{"error": {"code": "IEF.011005", "message": "token expired"}}'

        assert type(error_from_response(400, body, {})) is AuthenticationError

    @pytest.mark.parametrize(
        ("body", "parsed"),
        [
            (
                b'{"error": {"code": 401, "message": "m", "title": "Unauthorized"}}',
                ("401", "m", None),
            ),
            (
                b'{"error": {"code": "X", "message": "m"}, "request_id": "r"}',
                ("X", "m", "r"),
            ),
            (b'{"error": "flat text"}', (None, None, None)),
            (b'{"error_code": true, "error_msg": ["m"]}', (None, None, None)),
            (b"[1, 2]", (None, "[1, 2]", None)),
            (b"", (None, None, None)),
        ],
    )
    def test_odd_bodies(
        self, body: bytes, parsed: tuple[str | None, str | None, str | None]
    ) -> None:
        """A numeric code is kept as text; anything not text is dropped."""
        assert parsed == read_error_body(body)


class TestRedirect:
    def test_location_is_on_the_error(self) -> None:
        """A 3xx keeps where it pointed, and says it was not followed."""
        error = error_from_response(
            302, b"", {"Location": "https://ief.cn-north-1.example.com/v2/p/jobs"}
        )

        assert "https://ief.cn-north-1.example.com/v2/p/jobs" == error.location
        assert "not followed" in str(error)
        assert error.location in str(error)

    def test_location_loses_credentials_query_and_fragment(self) -> None:
        """A hostile server echoing a secret into Location gets it nowhere."""
        error = error_from_response(
            307, b"", {"Location": "https://user:pw@evil.example.com/s?t=SECRET#x"}
        )

        assert "https://evil.example.com/s" == error.location
        assert "SECRET" not in repr(error)
        assert "pw" not in str(error)

    def test_no_location_outside_3xx(self) -> None:
        error = error_from_response(404, b"", {"Location": "https://x.example/"})

        assert error.location is None


def _every_error() -> st.SearchStrategy[IefError]:
    text = st.none() | st.text(max_size=20)
    where = {
        "project_id": text,
        "offset": st.none() | st.integers(0, 10**6),
        "attempts": st.integers(1, 10),
    }
    api = {
        **where,
        "status": st.integers(300, 599),
        "error_code": text,
        "error_msg": text,
        "request_id": text,
        "location": text,
    }
    retry_after = st.none() | st.floats(0, 3600)
    return st.one_of(
        st.builds(IefError, **where),
        *(
            st.builds(cls, **api)
            for cls in (ApiError, AuthenticationError, NotFoundError)
        ),
        st.builds(ThrottledError, **api, retry_after=retry_after),
        st.builds(ServerError, **api, retry_after=retry_after),
        st.builds(
            TransportError,
            **where,
            reason=st.text(max_size=20),
            retryable=st.booleans(),
        ),
        st.builds(
            DecodeError,
            **where,
            problems=st.lists(st.text(max_size=10), max_size=3).map(tuple),
            request_id=text,
        ),
        st.builds(ListingMovedError, **where, reason=st.text(max_size=20)),
    )


class TestPickleAndCopy:
    @given(error=_every_error(), notes=st.lists(st.text(max_size=10), max_size=2))
    def test_every_error_round_trips(self, error: IefError, notes: list[str]) -> None:
        """pickle, copy and deepcopy keep the type, the message, every field and
        the notes: process pools and task queues pickle exceptions."""
        for note in notes:
            error.add_note(note)

        for again in (
            pickle.loads(pickle.dumps(error)),  # noqa: S301 (our own bytes)
            copy.copy(error),
            copy.deepcopy(error),
        ):
            assert type(error) is type(again)
            assert str(error) == str(again)
            assert attrs.asdict(error) == attrs.asdict(again)
            assert getattr(error, "__notes__", None) == getattr(
                again, "__notes__", None
            )

    def test_fields_set_after_raising_survive(self) -> None:
        """A walk fills in attempts and offset after the error was made."""
        error = error_from_response(503, b"", {"Retry-After": "1"}, project_id="p")
        error.attempts, error.offset = 5, 200

        again = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)

        assert (5, 200, 1.0) == (again.attempts, again.offset, again.retry_after)
        assert "HTTP 503 (project p, offset 200, after 5 attempts)" == str(again)

    def test_an_exception_group_of_them_round_trips(self) -> None:
        """errors="collect" raises a group: it pickles whole."""
        group = ExceptionGroup(
            "2 of 2 projects failed",
            [
                ServerError(status=503, project_id="a", offset=0),
                TransportError(reason="timed out", project_id="b", offset=100),
            ],
        )

        again = pickle.loads(pickle.dumps(group))  # noqa: S301 (our own bytes)

        assert [str(e) for e in group.exceptions] == [str(e) for e in again.exceptions]


class TestMasking:
    @pytest.mark.parametrize(
        "spelled",
        [
            SECRET,
            "MIIE%2Bs3cret%2Ftoken%3D%3D",  # percent-encoded, every character
            "MIIE%2Bs3cret/token%3D%3D",  # percent-encoded, '/' kept
            "MIIE+s3cret/token%3D%3D",  # partly
            "MIIE%2bs3cret%2ftoken%3d%3d",  # lower-case hex
            "MIIE+s3cret\\/token==",  # JSON-escaped '/'
        ],
    )
    def test_every_spelling_is_masked(self, spelled: str) -> None:
        """An echo of a secret in any common spelling becomes the mark."""
        masked = mask_text(f"X-Auth-Token: {spelled}; more", {SECRET})

        assert "s3cret" not in masked
        assert "***" in masked

    def test_a_secret_across_the_cut_is_masked_not_halved(self) -> None:
        """Masking comes before the cut: a secret straddling 4 KiB (or the
        200 characters kept of an HTML page) leaves no half behind."""
        long = "x" * (SERVER_TEXT_MAX - 5) + SECRET
        html = ("<p>" + "y" * 190 + SECRET + "</p>").encode()

        assert "MIIE" not in mask_text(long, {SECRET})
        assert len(mask_text(long * 3, {SECRET}).encode()) <= SERVER_TEXT_MAX
        _, message, _ = read_error_body(html, secrets={SECRET})
        assert message is not None
        assert "MIIE" not in message

    def test_every_field_of_an_error_is_masked(self) -> None:
        """error_from_response masks code, message, request id and Location."""
        body = (
            b'{"error_code": "'
            + SECRET.encode()
            + b'", "error_msg": "'
            + b"m" * 9000
            + SECRET.encode()
            + b'"}'
        )
        headers = {
            "X-Request-Id": f"req-{SECRET}",
            "Location": f"https://elsewhere/{SECRET}/x?t={SECRET}",
        }

        error = error_from_response(302, body, headers, secrets={SECRET})

        for value in (error.error_code, error.error_msg, error.request_id):
            assert value is not None
            assert "s3cret" not in value
            assert len(value.encode()) <= SERVER_TEXT_MAX
        assert "s3cret" not in str(error.location)
        assert "s3cret" not in str(error)

    def test_redact_masks_a_tuple_of_problems(self) -> None:
        """A DecodeError's problems are server text too."""
        error = redact(DecodeError(problems=(f"bad {SECRET}",)), {SECRET})

        assert ("bad ***",) == error.problems
