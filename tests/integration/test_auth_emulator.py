"""Every auth provider end to end against the emulator's IAM and signature checks."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import aiohttp
import pytest

from _support import no_sleep
from ief_jobs import (
    AkSkAuth,
    AuthenticationError,
    IamPasswordAuth,
    IefClient,
    RetryPolicy,
)
from ief_jobs.emulator import AccessKey, Emulator, Faults, IamUser

_RETRY = RetryPolicy(attempts=4, sleep=no_sleep, jitter=lambda: 0.0)
_USER = IamUser("ops-bot", "correct-horse-battery", "acme")
_KEY = AccessKey("AKEMULATED0000000000", "emulated-secret-key-value-1234567890")


class Clock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _password_auth(
    emulator: Emulator, password: str = _USER.password, **kwargs: Any
) -> IamPasswordAuth:
    return IamPasswordAuth(
        _USER.name, password, _USER.domain, iam_endpoint=emulator.base_url, **kwargs
    )


def _ids(emulator: Emulator, project_id: str) -> list[str]:
    return [j["job_id"] for j in emulator.jobs(project_id)[::-1]]


class TestAkSk:
    async def test_a_signed_fan_out_lists_everything(self) -> None:
        """Every request signed, query sent exactly as signed (the emulator checks
        the raw query is the canonical one before it checks the signature)."""
        async with Emulator(projects=3, jobs=400, access_key=_KEY) as emulator:
            auth = AkSkAuth(_KEY.access_key, _KEY.secret_key)
            async with IefClient(emulator.base_url, auth=auth, page_size=50) as ief:
                seen: dict[str, list[str]] = {}
                async for pid, job in ief.iter_jobs_many(emulator.project_ids):
                    seen.setdefault(pid, []).append(job.job_id)
                ascending = await ief.list_jobs(
                    emulator.project_ids[0],
                    sort="created_at:asc",
                    job_type="node_upgrade",
                )

        assert {pid: _ids(emulator, pid) for pid in emulator.project_ids} == seen
        assert ascending
        assert 401 not in emulator.stats.statuses

    async def test_temporary_credentials_send_the_security_token(self) -> None:
        key = AccessKey(_KEY.access_key, _KEY.secret_key, security_token="temp-123")
        async with Emulator(projects=1, jobs=30, access_key=key) as emulator:
            pid = emulator.project_ids[0]
            good = AkSkAuth(key.access_key, key.secret_key, security_token="temp-123")
            bad = AkSkAuth(key.access_key, key.secret_key)
            async with IefClient(emulator.base_url, auth=good) as ief:
                assert 30 == len(await ief.list_jobs(pid))
            async with IefClient(emulator.base_url, auth=bad) as ief:
                with pytest.raises(AuthenticationError, match=r"APIG\.0301"):
                    await ief.list_jobs(pid)

    async def test_a_wrong_secret_is_refused_without_showing_it(self) -> None:
        async with Emulator(projects=1, jobs=30, access_key=_KEY) as emulator:
            auth = AkSkAuth(_KEY.access_key, "not-the-secret-key")
            async with IefClient(emulator.base_url, auth=auth, retry=_RETRY) as ief:
                with pytest.raises(AuthenticationError) as info:
                    await ief.list_jobs(emulator.project_ids[0])

        assert (401, "APIG.0301", 1) == (
            info.value.status,
            info.value.error_code,
            info.value.attempts,
        )
        text = "".join(traceback.format_exception(info.value)) + repr(info.value)
        assert "not-the-secret-key" not in text
        assert "Signature=" not in text

    @pytest.mark.parametrize("skew", [-16 * 60, 16 * 60])
    async def test_a_clock_more_than_15_minutes_off_is_apig_0303(
        self, skew: float
    ) -> None:
        clock = Clock()
        async with Emulator(
            projects=1, jobs=10, access_key=_KEY, clock=clock
        ) as emulator:
            auth = AkSkAuth(
                _KEY.access_key, _KEY.secret_key, clock=lambda: clock.now + skew
            )
            async with IefClient(emulator.base_url, auth=auth) as ief:
                with pytest.raises(AuthenticationError, match=r"APIG\.0303"):
                    await ief.count_jobs(emulator.project_ids[0])

    async def test_no_log_record_carries_the_secret_or_a_signature(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        faults = Faults(server_error_rate=0.3, drop_rate=0.1, retry_after="0")
        retry = RetryPolicy(attempts=10, sleep=no_sleep)
        async with Emulator(
            projects=2, jobs=200, access_key=_KEY, faults=faults
        ) as emulator:
            auth = AkSkAuth(_KEY.access_key, _KEY.secret_key)
            async with IefClient(
                emulator.base_url, auth=auth, retry=retry, page_size=20
            ) as ief:
                count = sum([1 async for _ in ief.iter_jobs_many(emulator.project_ids)])

        assert 400 == count
        assert caplog.records
        assert _KEY.secret_key not in caplog.text
        assert "Signature=" not in caplog.text


class TestIamPassword:
    async def test_one_token_per_project_however_many_requests(self) -> None:
        """Many concurrent requests for a project share one token request."""
        async with Emulator(projects=3, jobs=500, iam_user=_USER) as emulator:
            auth = _password_auth(emulator)
            async with IefClient(
                emulator.base_url, auth=auth, page_size=20, concurrency=16
            ) as ief:
                count = sum([1 async for _ in ief.iter_jobs_many(emulator.project_ids)])

        assert 1500 == count
        assert 3 == emulator.stats.tokens_issued == auth.token_requests

    async def test_a_token_expiry_mid_fan_out_reaches_no_caller(self) -> None:
        """The clock passes two token lifetimes during a fan-out: tokens are
        renewed ahead of expiry, and none of it shows to the caller."""
        clock = Clock()
        async with Emulator(
            projects=4, jobs=600, iam_user=_USER, clock=clock, token_ttl=3600
        ) as emulator:
            auth = _password_auth(emulator, refresh_margin=600, clock=clock)
            async with IefClient(
                emulator.base_url, auth=auth, page_size=20, concurrency=4
            ) as ief:
                count = 0
                async for _ in ief.iter_jobs_many(emulator.project_ids):
                    count += 1
                    if count % 800 == 0:
                        clock.now += 3300  # past the refresh point of every token

        assert 2400 == count
        assert auth.token_requests > 4  # renewed, not just fetched once
        assert 401 not in emulator.stats.statuses

    async def test_a_token_refused_early_is_refreshed_once_and_retried(self) -> None:
        """The server expires tokens before the auth expects: the 401 is met by
        one refresh and the same request again, never by an error."""
        clock = Clock()
        async with Emulator(
            projects=2, jobs=300, iam_user=_USER, clock=clock, token_ttl=100
        ) as emulator:
            # trusts tokens far past their expiry
            auth = _password_auth(emulator, refresh_margin=-10_000, clock=clock)
            async with IefClient(
                emulator.base_url, auth=auth, page_size=10, concurrency=2
            ) as ief:
                count = 0
                async for _ in ief.iter_jobs_many(emulator.project_ids):
                    count += 1
                    if count == 300:
                        clock.now += 200  # every token the emulator issued is dead

        assert 600 == count
        assert emulator.stats.statuses[401] >= 1
        assert 4 == auth.token_requests

    async def test_a_wrong_password_is_iams_message_and_no_secret(self) -> None:
        async with Emulator(projects=1, jobs=10, iam_user=_USER) as emulator:
            auth = _password_auth(emulator, "wrong-password-123")
            async with IefClient(emulator.base_url, auth=auth, retry=_RETRY) as ief:
                with pytest.raises(AuthenticationError) as info:
                    async for _ in ief.iter_jobs(emulator.project_ids[0]):
                        pass

        error = info.value
        assert (401, emulator.project_ids[0], 0) == (
            error.status,
            error.project_id,
            error.offset,
        )
        assert "The username or password is wrong." in str(error)
        text = "".join(traceback.format_exception(error)) + repr(error) + repr(auth)
        assert "wrong-password-123" not in text
        assert 1 == auth.token_requests  # refused credentials are not retried


async def test_a_token_beside_a_signature_decides() -> None:
    """The official SDK signs with whatever keys it holds and adds a token: the
    emulator, like IEF, lets the token decide (the benchmark's SDK baseline)."""
    async with Emulator(projects=1, jobs=5, access_key=_KEY) as emulator:
        url = f"{emulator.base_url}/v2/{emulator.project_ids[0]}/productmgr/jobs"
        bogus = "SDK-HMAC-SHA256 Access=X, SignedHeaders=host, Signature=" + "0" * 64
        async with aiohttp.ClientSession() as session:
            with_token = {"Authorization": bogus, "X-Auth-Token": emulator.token}
            async with session.get(url, headers=with_token) as response:
                assert 200 == response.status
            async with session.get(url, headers={"Authorization": bogus}) as response:
                assert 401 == response.status
