"""AK/SK signing against the published vectors; credentials from the environment."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aioresponses import aioresponses
from yarl import URL

from _support import FIXTURES
from ief_jobs import (
    AkSkAuth,
    AuthenticationError,
    IamPasswordAuth,
    IefClient,
    TokenAuth,
    auth_from_env,
)
from ief_jobs._signing import (
    authorization,
    canonical_request,
    encode_query,
    format_sdk_date,
    parse_sdk_date,
    signature,
)

# A copy of ../shared/fixtures/aksk_sign_vectors.json, checked against the
# official huaweicloudsdkcore signer.
VECTORS: dict[str, Any] = orjson.loads(
    (FIXTURES / "aksk_sign_vectors.json").read_bytes()
)
SDK_DATE = VECTORS["x_sdk_date"]


def _vector_id(vector: dict[str, Any]) -> str:
    return str(vector["name"])


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=_vector_id)
class TestVectors:
    def test_canonical_request_and_signature(self, vector: dict[str, Any]) -> None:
        url = URL(vector["url"])
        canonical, signed = canonical_request(
            vector["method"],
            url.raw_path,
            url.raw_query_string,
            vector["headers"],
            vector["body"].encode(),
        )

        if "canonical_request" in vector:
            assert vector["canonical_request"] == canonical
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        assert vector["canonical_request_sha256"] == digest
        assert vector["signed_headers"] == signed
        assert vector["signature"] == signature(VECTORS["sk"], SDK_DATE, canonical)
        if "authorization" in vector:
            assert vector["authorization"] == authorization(
                VECTORS["ak"], signed, vector["signature"]
            )


# AkSkAuth signs requests without a body (IEF's list call): those vectors
@pytest.mark.parametrize(
    "vector", [v for v in VECTORS["vectors"] if not v["body"]], ids=_vector_id
)
async def test_aksk_auth_signs_as_the_vector(vector: dict[str, Any]) -> None:
    """AkSkAuth adds Host and X-Sdk-Date itself and signs the wire URL."""
    raw = URL(vector["url"])
    # the client sends the query in its canonical form: sign that URL
    wire = URL(
        f"{raw.with_query(None)}?{encode_query(raw.query.items())}", encoded=True
    )
    headers = {
        k: v for k, v in vector["headers"].items() if k not in {"Host", "X-Sdk-Date"}
    }
    when = parse_sdk_date(SDK_DATE)
    assert when is not None
    auth = AkSkAuth(VECTORS["ak"], VECTORS["sk"], clock=lambda: when)

    await auth.apply(vector["method"], wire, headers)

    assert SDK_DATE == headers["X-Sdk-Date"]
    assert vector["headers"]["Host"] == headers["Host"]
    assert headers["Authorization"].endswith(f"Signature={vector['signature']}")


class TestAkSkAuth:
    async def test_security_token_is_sent_and_signed(self) -> None:
        auth = AkSkAuth("AK", "SK", security_token="temp-token", clock=lambda: 0.0)
        headers: dict[str, str] = {}

        await auth.apply("GET", URL("https://ief.example.com/v2/p/x?a=1"), headers)

        assert "temp-token" == headers["X-Security-Token"]
        assert "x-security-token" in headers["Authorization"]

    def test_repr_shows_no_secret(self) -> None:
        auth = AkSkAuth("MY-AK", "MY-SECRET", security_token="MY-TEMP-TOKEN")

        assert "AkSkAuth(access_key='MY-AK')" == repr(auth)

    def test_sdk_date_round_trip(self) -> None:
        assert SDK_DATE == format_sdk_date(parse_sdk_date(SDK_DATE) or 0.0)
        assert parse_sdk_date("yesterday") is None

    def test_query_encoding_is_sorted_and_strict(self) -> None:
        pairs = [("sort", "created_at:desc"), ("job_type", "a b&c=d"), ("limit", "1")]

        assert "job_type=a%20b%26c%3Dd&limit=1&sort=created_at%3Adesc" == encode_query(
            pairs
        )


class TestIamPasswordAuth:
    def test_repr_shows_no_password(self) -> None:
        auth = IamPasswordAuth("ops", "hunter2-password", "acme")

        assert "hunter2-password" not in repr(auth)
        assert "ops" in repr(auth)


class TestFromEnv:
    def test_aksk_wins_over_a_token(self) -> None:
        auth = auth_from_env(
            {
                "HUAWEICLOUD_SDK_AK": "AK",
                "HUAWEICLOUD_SDK_SK": "SK",
                "HUAWEICLOUD_SDK_SECURITY_TOKEN": "TEMP",
                "IEF_TOKEN": "TOKEN",
            }
        )

        assert AkSkAuth("AK", "SK", security_token="TEMP") == auth

    def test_a_token_alone(self) -> None:
        assert TokenAuth("TOKEN") == auth_from_env({"IEF_TOKEN": "TOKEN"})

    def test_half_a_key_pair_is_not_credentials(self) -> None:
        assert auth_from_env({"HUAWEICLOUD_SDK_AK": "AK"}) is None

    def test_client_from_a_region(self) -> None:
        client = IefClient.from_env(
            {"IEF_TOKEN": "T", "HUAWEICLOUD_SDK_REGION": "cn-north-4"}
        )

        assert "https://ief.cn-north-4.myhuaweicloud.com" == str(client.endpoint)

    def test_client_endpoint_wins_over_region(self) -> None:
        client = IefClient.from_env(
            {
                "IEF_TOKEN": "T",
                "IEF_ENDPOINT": "http://127.0.0.1:8080",
                "IEF_REGION": "cn-north-4",
            }
        )

        assert "http://127.0.0.1:8080" == str(client.endpoint)

    @pytest.mark.parametrize(
        ("environ", "problem"),
        [
            ({"IEF_REGION": "cn-north-4"}, "no credentials"),
            ({"IEF_TOKEN": "T"}, "no endpoint"),
        ],
    )
    def test_what_is_missing_is_named(
        self, environ: dict[str, str], problem: str
    ) -> None:
        with pytest.raises(ValueError, match=problem):
            IefClient.from_env(environ)


class TestArguments:
    @pytest.mark.parametrize(
        ("build", "error", "name"),
        [
            (lambda: TokenAuth(None), TypeError, "token"),  # type: ignore[arg-type]
            (lambda: TokenAuth(""), ValueError, "token"),
            (lambda: TokenAuth("tok\r\nX-Evil: 1"), ValueError, "token"),
            (lambda: AkSkAuth(None, None), TypeError, "access_key"),  # type: ignore[arg-type]
            (lambda: AkSkAuth("AK", None), TypeError, "secret_key"),  # type: ignore[arg-type]
            (lambda: AkSkAuth("AK", " SK "), ValueError, "secret_key"),
            (
                lambda: AkSkAuth("AK", "SK", security_token=""),
                ValueError,
                "security_token",
            ),
            (lambda: AkSkAuth("AK", "SK", clock=0), TypeError, "clock"),  # type: ignore[arg-type]
            (lambda: IamPasswordAuth(None, "pw", "d"), TypeError, "user"),  # type: ignore[arg-type]
            (lambda: IamPasswordAuth("u", "", "d"), ValueError, "password"),
            (lambda: IamPasswordAuth("u", "pw", 3), TypeError, "domain"),  # type: ignore[arg-type]
            (
                lambda: IamPasswordAuth("u", "pw", "d", iam_endpoint="iam.example"),
                ValueError,
                "iam_endpoint",
            ),
            (
                lambda: IamPasswordAuth("u", "pw", "d", refresh_margin=float("nan")),
                ValueError,
                "refresh_margin",
            ),
        ],
    )
    def test_a_bad_credential_is_refused_where_it_is_built(
        self, build: Callable[[], object], error: type[Exception], name: str
    ) -> None:
        """TypeError or ValueError naming the argument, at construction."""
        with pytest.raises(error, match=name):
            build()

    def test_a_password_may_have_spaces(self) -> None:
        """A password travels in a JSON body: spaces around it are its own."""
        assert "ops" == IamPasswordAuth("ops", " pass phrase ", "acme").user

    def test_the_message_never_shows_the_value(self) -> None:
        """A secret with a line break in it is refused without being repeated."""
        with pytest.raises(ValueError) as info:
            AkSkAuth("AK", "MY-SECRET\n")

        assert "MY-SECRET" not in str(info.value)


class TestIamErrors:
    async def test_a_nested_iam_error_keeps_code_and_message(self) -> None:
        """IAM's {"error": {"code", "message"}} is read by the one error parser,
        a numeric code kept as text."""
        auth = IamPasswordAuth(
            "ops", "hunter2-pw", "acme", iam_endpoint="https://iam.example"
        )
        body = {"error": {"code": 401, "message": "bad password", "title": "no"}}
        with aioresponses() as mocked:
            mocked.post(
                "https://iam.example/v3/auth/tokens?nocatalog=true",
                status=401,
                payload=body,
                headers={"X-Request-Id": "iam-1"},
            )
            async with auth:
                with pytest.raises(AuthenticationError) as info:
                    await auth.token_for("p1")

        error = info.value
        assert ("401", "iam-1", "p1") == (
            error.error_code,
            error.request_id,
            error.project_id,
        )
        assert "IAM refused the token request: bad password" == error.error_msg
        assert "hunter2-pw" not in repr(error)
