"""Checked by mypy --strict, never run: the public API's types as users see them."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import assert_type

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ief_jobs import (
    AkSkAuth,
    Auth,
    BatchJob,
    BatchJobDetail,
    Checkpoint,
    ExtensionInfo,
    IamPasswordAuth,
    IefClient,
    JobEvent,
    JobEventKind,
    JobPage,
    JobStatus,
    JobTarget,
    JobTask,
    JobType,
    ListingMovedError,
    NotFoundError,
    RedisCheckpoint,
    RedisStreamSink,
    SecretHoldingAuth,
    ServerError,
    Sink,
    SortOrder,
    SqliteCheckpoint,
    StateError,
    ThrottledError,
    TokenAuth,
    WatchHealth,
    auth_from_env,
)


async def use_api(token: str) -> None:
    async with IefClient("https://ief.example.com", auth=TokenAuth(token)) as ief:
        assert_type(ief, IefClient)
        async for job in ief.iter_jobs("p1", job_type=JobType.NODE_UPGRADE):
            assert_type(job, BatchJob)
            assert_type(job.created_at, datetime)
            assert_type(job.status, JobStatus | str)
        async for page in ief.iter_pages("p1", sort=SortOrder.CREATED_AT_ASC):
            assert_type(page, JobPage)
            assert_type(page.next_offset, int)
        async for project_id, job in ief.iter_jobs_many(["p1", "p2"], errors="collect"):
            assert_type(project_id, str)
            assert_type(job, BatchJob)
        async with ief.iter_jobs_many(["p1", "p2"]) as pairs:
            async for project_id, job in pairs:
                assert_type(project_id, str)
                assert_type(job, BatchJob)
                break
        async with ief.iter_pages("p1") as pages:
            assert_type(await anext(pages), JobPage)
        assert_type(await ief.list_jobs("p1"), list[BatchJob])
        assert_type(await ief.count_jobs("p1"), int)
        detail = await ief.get_job("p1", "66273c66-f72e", instance_id="i1")
        assert_type(detail, BatchJobDetail)
        assert_type(detail.to_job(), BatchJob)
        assert_type(detail.tasks, tuple[JobTask, ...])
        assert_type(detail.targets, tuple[JobTarget, ...])
        for task in detail.tasks:
            assert_type(task.status, JobStatus | str)
            assert_type(task.created_at, datetime)
            assert_type(task.extension_info, tuple[ExtensionInfo, ...])
    try:
        pass
    except ThrottledError as exc:
        assert_type(exc.retry_after, float | None)
    except ListingMovedError as exc:
        assert_type(exc.offset, int | None)
    except NotFoundError as exc:
        assert_type(exc.status, int)
    except ServerError as exc:
        assert_type(exc.retry_after, float | None)
        assert_type(exc.location, str | None)


async def use_credentials_and_watch(ak: str, sk: str, password: str) -> None:
    signed = IefClient("https://ief.example.com", auth=AkSkAuth(ak, sk))
    by_password = IamPasswordAuth("ops", password, "acme")
    assert_type(IefClient.from_env(), IefClient)
    seconds = IefClient("https://ief.example.com", auth=AkSkAuth(ak, sk), timeout=5)
    assert_type(seconds, IefClient)
    assert_type(auth_from_env(), Auth | None)
    held: SecretHoldingAuth = by_password  # the built-in auths say their secrets
    assert_type(held.secrets(), Collection[str])
    async with signed as ief, by_password:
        async for event in ief.watch_jobs(["p1"], interval=10):
            assert_type(event, JobEvent)
            assert_type(event.kind, JobEventKind)
            assert_type(event.job, BatchJob | None)
            assert_type(event.new_status, JobStatus | str | None)


async def use_checkpoints(path: str, url: str) -> None:
    async with (
        IefClient("https://ief.example.com", auth=TokenAuth("t")) as ief,
        SqliteCheckpoint(path) as local,
        RedisCheckpoint.from_url(url, prefix="watch") as shared,
    ):
        stores: list[Checkpoint] = [local, shared]
        for store in stores:
            events = ief.watch_jobs(["p1"], checkpoint=store, shard=(0, 2))
            async for event in events:
                assert_type(event.event_id, str)


async def use_sink(url: str) -> None:
    async with (
        IefClient("https://ief.example.com", auth=TokenAuth("t")) as ief,
        RedisCheckpoint.from_url(url) as state,
        RedisStreamSink.from_url(url, stream="jobs") as stream,
    ):
        sink: Sink = stream
        try:
            async with ief.watch_jobs(
                ["p1"], checkpoint=state, sink=sink, reset_state=True, lease_ttl=90
            ) as events:
                async for event in events:
                    assert_type(event, JobEvent)
        except StateError as error:
            assert_type(error.reason, str)


async def use_telemetry(
    tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    health = WatchHealth(30)
    async with IefClient(
        "https://ief.example.com",
        auth=TokenAuth("t"),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    ) as ief:
        async for event in ief.watch_jobs(["p1"], interval=30, health=health):
            assert_type(event, JobEvent)
    assert_type(health.check(), tuple[bool, str])
