"""
A fast, typed asyncio client for listing Huawei Cloud IEF batch jobs.

Example::

    async with IefClient(endpoint, auth=TokenAuth(token)) as ief:
        async for job in ief.iter_jobs(project_id):
            print(job.job_name, job.status)
"""

from __future__ import annotations

from ._telemetry import WatchHealth
from .auth import (
    AkSkAuth,
    Auth,
    IamPasswordAuth,
    RefreshableAuth,
    SecretHoldingAuth,
    TokenAuth,
    auth_from_env,
)
from .checkpoint import (
    Checkpoint,
    ProjectChanges,
    RedisCheckpoint,
    SavedProject,
    SqliteCheckpoint,
)
from .client import IefClient, Stream
from .codec import decoder_name
from .errors import (
    ApiError,
    AuthenticationError,
    DecodeError,
    IefError,
    ListingMovedError,
    NotFoundError,
    ServerError,
    StateError,
    ThrottledError,
    TransportError,
)
from .listing import JobCountChanged, JobCountStale
from .models import (
    BatchJob,
    BatchJobDetail,
    ExtensionInfo,
    JobPage,
    JobStatus,
    JobTarget,
    JobTask,
    JobType,
    Progress,
    SortOrder,
)
from .retry import NO_RETRIES, RetryPolicy
from .sink import RedisStreamSink
from .watch import JobEvent, JobEventKind, Sink

__all__ = [
    "NO_RETRIES",
    "AkSkAuth",
    "ApiError",
    "Auth",
    "AuthenticationError",
    "BatchJob",
    "BatchJobDetail",
    "Checkpoint",
    "DecodeError",
    "ExtensionInfo",
    "IamPasswordAuth",
    "IefClient",
    "IefError",
    "JobCountChanged",
    "JobCountStale",
    "JobEvent",
    "JobEventKind",
    "JobPage",
    "JobStatus",
    "JobTarget",
    "JobTask",
    "JobType",
    "ListingMovedError",
    "NotFoundError",
    "Progress",
    "ProjectChanges",
    "RedisCheckpoint",
    "RedisStreamSink",
    "RefreshableAuth",
    "RetryPolicy",
    "SavedProject",
    "SecretHoldingAuth",
    "ServerError",
    "Sink",
    "SortOrder",
    "SqliteCheckpoint",
    "StateError",
    "Stream",
    "ThrottledError",
    "TokenAuth",
    "TransportError",
    "WatchHealth",
    "auth_from_env",
    "decoder_name",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 (only when asked)

        return version("ief-jobs")
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
