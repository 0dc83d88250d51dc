"""
The ``ief-jobs`` command: ``demo``, ``list``, ``count``, ``show``, ``watch`` and
``emulator``.

Needs the ``cli`` extra (click for the commands, rich for tables and progress).
Credentials come from the environment (``HUAWEICLOUD_SDK_AK`` and
``HUAWEICLOUD_SDK_SK``, or ``IEF_TOKEN``), never from arguments that would show
in ``ps``; the endpoint from ``--endpoint`` or ``--region``, else as
`IefClient.from_env` reads it (``IEF_ENDPOINT``, ``IEF_REGION``).

Every error is one line on stderr, ``ief-jobs: error: ...``: exit code 1 for a
failure, 2 for a usage error (a bad flag, argument or environment variable).
A closed stdout (``ief-jobs list ... | head``) ends the command quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

import click
import orjson
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from . import (
    AkSkAuth,
    BatchJobDetail,
    Checkpoint,
    ExtensionInfo,
    IamPasswordAuth,
    IefClient,
    IefError,
    JobEvent,
    JobEventKind,
    JobType,
    RedisCheckpoint,
    RedisStreamSink,
    SortOrder,
    SqliteCheckpoint,
    Stream,
    TokenAuth,
    WatchHealth,
    decoder_name,
)
from ._checks import MAX_PAGE_SIZE, check_job_id, check_project_id
from ._daemon import configure_logging, metrics_reader, serve
from ._state_location import parse_state_location
from .emulator import DEFAULT_STRAGGLERS, Emulator, Faults
from .forms import job_fields as _job_fields
from .models import BatchJob
from .models import Progress as ListingProgress
from .sink import event_json as _event_json
from .watch import shard_of

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

T = TypeVar("T")

_JOB_TYPES = [t.value for t in JobType]
_SORTS = [s.value for s in SortOrder]


def _one_line(text: object) -> str:
    """*text* on one line: a server's line breaks and control characters
    (a terminal escape, say) become spaces."""
    chars = (" " if unicodedata.category(c)[0] == "C" else c for c in str(text))
    return " ".join("".join(chars).split())


class _CommandError(click.ClickException):
    """
    Every error the command shows: one line ``ief-jobs: error: ...`` on
    stderr; exit code 1 for a failure, 2 (``usage=True``) for a usage error.
    """

    def __init__(self, message: object, *, usage: bool = False) -> None:
        super().__init__(_one_line(message))
        # click declares it on the class; this error sets its own
        self.exit_code = 2 if usage else 1  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"ief-jobs: error: {self.format_message()}", err=True, file=file)


class _Main(click.Group):
    """The command group, speaking click's own errors in our one form."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _one_voice():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_voice():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_voice() -> Iterator[None]:
    try:
        yield
    except (_CommandError, click.exceptions.NoArgsIsHelpError):
        raise  # ours already; `ief-jobs` alone shows the help
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        raise _CommandError(exc.format_message() + hint, usage=True) from None
    except click.ClickException as exc:
        raise _CommandError(exc.format_message(), usage=exc.exit_code == 2) from None  # noqa: PLR2004


def _run(coro: Awaitable[T]) -> T:
    """
    Run *coro*; an error becomes one line on stderr and exit code 1.

    Arguments are checked before this (click's types and callbacks, exit code
    2), so a `ValueError` or `TypeError` raised while the command runs is a
    failure, not a usage error.
    """
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (IefError, ValueError, TypeError) as exc:
        raise _CommandError(exc) from None
    except BrokenPipeError:
        raise  # the reader went away (| head): click ends quietly
    except OSError as exc:  # what is left: stdout refused a line (a full disk)
        raise _CommandError(f"cannot write the output: {exc}") from None
    except _OutputError as exc:
        raise _CommandError(f"cannot write the output: {exc.__cause__}") from None
    except ExceptionGroup as group:  # errors="collect": one line each
        *first, last = group.exceptions
        for error in first:
            _CommandError(error).show()
        raise _CommandError(last) from None


@contextlib.contextmanager
def _progress_bar(
    console: Console, *, enabled: bool
) -> Iterator[Callable[[ListingProgress], None] | None]:
    """A rich progress bar fed by the walk's on_progress, one row per project."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        rows: dict[str, Any] = {}

        def update(progress: ListingProgress) -> None:
            if progress.project_id not in rows:
                rows[progress.project_id] = bar.add_task(
                    _shorten(progress.project_id, 12), total=None
                )
            bar.update(
                rows[progress.project_id],
                total=progress.target,
                completed=progress.delivered,
            )

        yield update


_CUT: Final = "\u2026"  # one character: an id cut in the middle keeps both ends


def _shorten(text: str, width: int) -> str:
    """
    *text* in at most *width* characters, cut in the middle: an id keeps the
    start a person recognises and the end they search for.

    Example::

        assert "e4722…f206d9" == _shorten("e4722bb8341306a3f9bd9caf33f206d9", 12)
    """
    if len(text) <= width:
        return text
    if width < 3:  # noqa: PLR2004 (no room for both ends)
        return text[:width]
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + _CUT + text[len(text) - tail :]


def _fit(natural: Sequence[int], least: Sequence[int], room: int) -> list[int]:
    """
    Widths for columns that want *natural* but can do with *least*, summing
    to at most *room* where they can: the first columns give way first.
    """
    widths = list(natural)
    over = sum(widths) - room
    for index, minimum in enumerate(least):
        cut = min(max(over, 0), max(widths[index] - minimum, 0))
        widths[index] -= cut
        over -= cut
    return widths


def _terminal_width() -> int:
    """The terminal's columns (``COLUMNS`` first), 80 where there is none."""
    return shutil.get_terminal_size().columns


# project, created, type, name, status: the order in which they give way on a
# narrow terminal, and how narrow each may get (so at 80 columns a status,
# 20 characters at most, stays whole beside 11 of tasks)
_TABLE_LEAST: Final = (9, 11, 9, 10, 10)
_TABLE_GAPS: Final = 2 * 5  # two spaces between columns
# the creation time at 19, 16 and 11 characters: seconds go first, then the year
_CREATED_FORMATS: Final = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m-%d %H:%M")


def _created(job: BatchJob, width: int) -> str:
    for form in _CREATED_FORMATS:
        text = job.created_at.strftime(form)
        if len(text) <= width:
            return text
    return text


def _jobs_table(
    jobs: Sequence[tuple[str, BatchJob]], *, title: str, width: int
) -> Table:
    """The jobs as a table *width* columns wide at most, ids cut in the middle."""
    rows = [
        (
            project_id,
            _created(job, 19),
            str(job.job_type),
            job.job_name,
            str(job.status),
            f"{job.task_success_count}/{job.task_failed_count}/{job.task_total_count}",
        )
        for project_id, job in jobs
    ]
    headers = ("project", "created", "type", "name", "status", "tasks")
    natural = [
        max(len(text) for text in column) for column in zip(headers, *rows, strict=True)
    ]
    widths = _fit(natural[:5], _TABLE_LEAST, width - _TABLE_GAPS - natural[5])
    table = Table(
        title=title,
        caption="created: UTC; tasks: succeeded/failed/total",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for header in ("project", "created", "name", "type", "status", "tasks"):
        table.add_column(header, no_wrap=True)
    for (project_id, _, job_type, name, status, tasks), (_, job) in zip(
        rows, jobs, strict=True
    ):
        table.add_row(
            _shorten(project_id, widths[0]),
            _created(job, widths[1]),
            _shorten(name, widths[3]),
            _shorten(job_type, widths[2]),
            _shorten(status, widths[4]),
            tasks,
        )
    return table


def _job_json(project_id: str, job: BatchJob) -> bytes:
    return orjson.dumps(_job_fields(project_id, job))


# project, name, change: the order in which they give way on a narrow terminal
_LINE_LEAST: Final = (9, 12, 14)
_NAME_WIDTH: Final = 24  # names line up below each other up to this


def _event_line(event: JobEvent, width: int | None = None) -> str:
    """One event as a line for people, *width* columns at most (the terminal's)."""
    width = _terminal_width() if width is None else width
    when = event.observed_at.strftime("%H:%M:%S")
    head = f"{when}  {event.kind.value:14}  "
    job = event.job
    if job is None:  # project_failed
        failed = f"{event.failures} polls failed: {event.error}"
        sizes = (len(event.project_id), len(failed))
        where, what = _fit(sizes, (9, 20), width - len(head) - 2)
        return f"{head}{_shorten(event.project_id, where)}  {_shorten(failed, what)}"
    counts = f"{job.task_success_count}/{job.task_failed_count}/{job.task_total_count}"
    change = (
        f"{event.old_status} -> {event.new_status}"
        if event.kind in {JobEventKind.STATUS_CHANGED, JobEventKind.FINISHED}
        else str(job.status)
    )
    natural = (len(event.project_id), max(len(job.job_name), _NAME_WIDTH), len(change))
    room = width - len(head) - len(counts) - 3 * 2
    where, name, what = _fit(natural, _LINE_LEAST, room)
    return (
        f"{head}{_shorten(event.project_id, where)}  "
        f"{_shorten(job.job_name, name):{name}}  {_shorten(change, what)}  {counts}"
    )


def _summary(
    console: Console, jobs: list[tuple[str, BatchJob]], seconds: float
) -> None:
    by_project = Counter(pid for pid, _ in jobs)
    by_type = Counter(str(job.job_type) for _, job in jobs)
    by_status = Counter(str(job.status) for _, job in jobs)
    console.print(
        f"\nListed [bold]{len(jobs):,}[/] jobs from {len(by_project)} projects "
        f"in {seconds:.2f} s ({len(jobs) / max(seconds, 1e-9):,.0f} jobs/s)."
    )
    for title, counts in (
        ("Jobs per project", by_project),
        ("Jobs per type", by_type),
        ("Jobs per status", by_status),
    ):
        table = Table(title=title)
        table.add_column(title.split()[-1])
        table.add_column("jobs", justify="right")
        for key, count in sorted(counts.items()):
            table.add_row(key, f"{count:,}")
        console.print(table)
    newest = sorted(jobs, key=lambda pair: pair[1].created_at, reverse=True)[:10]
    console.print(_jobs_table(newest, title="The ten newest jobs", width=console.width))


def _decoder_line() -> str:
    name = decoder_name()
    if name == "msgspec":  # the `fast` extra's compiled path: say which build
        from importlib.metadata import version  # noqa: PLC0415 (only when asked)

        name = f"msgspec {version('msgspec')}"
    return f"decoder: {name}"


@click.group(cls=_Main)
@click.version_option(
    package_name="ief-jobs",
    # the decoding path is chosen once, at import: name it with the version
    message=f"%(prog)s, version %(version)s\n{_decoder_line()}",
)
def main() -> None:
    """List Huawei Cloud IEF batch jobs, fast."""


class _Seconds(click.FloatRange):
    """A finite number of seconds, 0 or more (FloatRange lets inf and nan in)."""

    name = "seconds"

    def __init__(self, minimum: float = 0) -> None:
        super().__init__(min=minimum)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


_PORT = click.IntRange(0, 65535)
_PROJECTS = click.IntRange(min=1)


def _jobs_option(default: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--jobs",
        type=click.IntRange(min=0),
        default=default,
        show_default=True,
        help="Jobs per project.",
    )


def _latency_option(
    default: float, text: str
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--latency", type=_Seconds(), default=default, show_default=True, help=text
    )


@main.command()
@click.option(
    "--projects", type=_PROJECTS, default=5, show_default=True, help="Projects to list."
)
@_jobs_option(2000)
@_latency_option(0.02, "Seconds each answer takes.")
def demo(projects: int, jobs: int, latency: float) -> None:
    """Start a local IEF emulator and list every project's jobs at once."""
    console = Console()

    async def run() -> None:
        faults = Faults(latency=latency, latency_jitter=latency / 2)
        async with Emulator(projects=projects, jobs=jobs, faults=faults) as emulator:
            console.print(
                f"IEF emulator at {emulator.base_url} with {projects} projects of "
                f"{jobs:,} jobs, {latency * 1000:.0f} ms per answer."
            )
            key = emulator.access_key
            started = time.perf_counter()
            # signed with AK/SK, as most services authenticate
            async with IefClient(
                emulator.base_url, auth=AkSkAuth(key.access_key, key.secret_key)
            ) as ief:
                with _progress_bar(console, enabled=True) as on_progress:
                    listed = [
                        pair
                        async for pair in ief.iter_jobs_many(
                            emulator.project_ids, on_progress=on_progress
                        )
                    ]
            _summary(console, listed, time.perf_counter() - started)
            console.print(
                f"{emulator.stats.requests} requests, each signed with AK/SK, at "
                f"most {emulator.stats.max_in_flight} in flight."
            )
            user = emulator.iam_user
            iam = IamPasswordAuth(
                user.name, user.password, user.domain, iam_endpoint=emulator.base_url
            )
            async with IefClient(emulator.base_url, auth=iam) as ief:
                totals = [await ief.count_jobs(pid) for pid in emulator.project_ids]
            console.print(
                f"With an IAM user's password instead: {sum(totals):,} jobs counted, "
                f"{iam.token_requests} project-scoped tokens fetched."
            )
        await _demo_watch(console)

    _run(run())


class _DemoClock:
    """Wall-clock seconds that jump when the watch sleeps: an hour in no time."""

    def __init__(self, polls: int) -> None:
        self.now = time.time()
        self.polls_left = polls

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.polls_left -= 1
        if self.polls_left <= 0:
            raise _DemoOver
        self.now += seconds
        await asyncio.sleep(0)


class _DemoOver(Exception):  # noqa: N818 (a signal, not an error)
    pass


async def _demo_watch(console: Console) -> None:
    polls, interval = 120, 30.0
    console.print(
        f"\nwatch_jobs over running jobs: {polls} polls {interval:.0f} s apart "
        "(emulated time), the first events:"
    )
    clock = _DemoClock(polls)
    kinds: Counter[str] = Counter()
    async with (
        Emulator(projects=2, jobs=30, seed=11, running=True, clock=clock) as emulator,
        IefClient(emulator.base_url, auth=TokenAuth(emulator.token)) as ief,
    ):
        stream = ief.watch_jobs(
            emulator.project_ids, interval=interval, clock=clock, sleep=clock.sleep
        )
        with contextlib.suppress(_DemoOver):
            async for event in stream:
                kinds[event.kind.value] += 1
                if sum(kinds.values()) <= 10:  # noqa: PLR2004
                    line = _event_line(event, width=console.width - 2)
                    console.print("  " + line, markup=False, highlight=False)
        requests = emulator.stats.requests
    console.print(
        "Events: "
        + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        + f". {requests} requests for {polls} polls of "
        f"{len(emulator.project_ids)} projects."
    )


_CONNECTION_OPTIONS = (
    click.option(
        "--endpoint", help="Base URL of IEF (default: IEF_ENDPOINT, or IEF_REGION's)."
    ),
    click.option("--region", help="Region, e.g. cn-north-4 (instead of --endpoint)."),
    click.option("--instance-id", help="ief-instance-id (platinum edition)."),
    click.option("--insecure", is_flag=True, help="Do not verify TLS certificates."),
)


def _connection_options(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_CONNECTION_OPTIONS):
        func = option(func)
    return func


def _checked(
    check: Callable[[str], str],
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback running the library's own check on each value."""

    def callback(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            for one in value if isinstance(value, tuple) else (value,):
                check(one)
        except (TypeError, ValueError) as exc:
            raise click.BadParameter(str(exc), param=param) from None
        return value

    return callback


_PROJECT_ID_CHECK = _checked(check_project_id)


def _client_options(func: Callable[..., None]) -> Callable[..., None]:
    project_ids = click.argument(
        "project_ids", nargs=-1, required=True, callback=_PROJECT_ID_CHECK
    )
    return _connection_options(project_ids(func))


def _make_client(
    endpoint: str | None, region: str | None, instance_id: str | None, insecure: bool
) -> IefClient:
    """
    `IefClient.from_env`, with --endpoint or --region over the environment's.
    A problem in either is a usage error.
    """
    env = dict(os.environ)
    if endpoint and region:
        raise _CommandError("give --endpoint or --region, not both", usage=True)
    if endpoint:
        env["IEF_ENDPOINT"] = endpoint
    elif region:  # a flag wins over the environment's endpoint
        env.pop("IEF_ENDPOINT", None)
        env["IEF_REGION"] = region
    if insecure:
        click.echo("ief-jobs: warning: TLS certificates are not verified", err=True)
    try:
        return IefClient.from_env(env, instance_id=instance_id, verify_ssl=not insecure)
    except (TypeError, ValueError) as exc:
        raise _CommandError(
            f"{exc} (credentials come from the environment, never arguments)"
            if "credentials" in str(exc)
            else exc,
            usage=True,
        ) from None


@main.command(name="list")
@_client_options
@click.option("--job-type", type=click.Choice(_JOB_TYPES), help="Only this type.")
@click.option(
    "--sort", type=click.Choice(_SORTS), help="Order (server default: newest first)."
)
@click.option(
    "--max-items", type=click.IntRange(min=0), help="At most this many per project."
)
@click.option(
    "--page-size",
    type=click.IntRange(1, MAX_PAGE_SIZE),
    default=100,
    show_default=True,
    help=f"Records per request (IEF allows 1 to {MAX_PAGE_SIZE:,}).",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "jsonl"]),
    default=None,
    help="table for people, jsonl for pipes (default: table on a terminal).",
)
def list_command(
    project_ids: tuple[str, ...],
    endpoint: str | None,
    region: str | None,
    instance_id: str | None,
    insecure: bool,
    job_type: str | None,
    sort: str | None,
    max_items: int | None,
    page_size: int,
    output: str | None,
) -> None:
    """List the batch jobs of PROJECT_IDS (all at once, each in order)."""
    output = output or ("table" if sys.stdout.isatty() else "jsonl")
    client = _make_client(endpoint, region, instance_id, insecure)
    stderr = Console(stderr=True)

    async def run() -> None:
        rows: list[tuple[str, BatchJob]] = []
        async with client as ief:
            with _progress_bar(stderr, enabled=stderr.is_terminal) as on_progress:
                async for project_id, job in ief.iter_jobs_many(
                    project_ids,
                    job_type=job_type,
                    sort=sort,
                    max_items=max_items,
                    page_size=page_size,
                    on_progress=on_progress,
                ):
                    if output == "jsonl":
                        sys.stdout.buffer.write(_job_json(project_id, job) + b"\n")
                    else:
                        rows.append((project_id, job))
        if output == "table":
            console = Console()
            title = f"{len(rows):,} batch jobs"
            console.print(_jobs_table(rows, title=title, width=console.width))
        sys.stdout.flush()

    _run(run())


@main.command()
@_client_options
@click.option("--job-type", type=click.Choice(_JOB_TYPES), help="Only this type.")
def count(
    project_ids: tuple[str, ...],
    endpoint: str | None,
    region: str | None,
    instance_id: str | None,
    insecure: bool,
    job_type: str | None,
) -> None:
    """Print how many batch jobs each of PROJECT_IDS has (one request each)."""
    client = _make_client(endpoint, region, instance_id, insecure)

    async def run() -> None:
        async with client as ief:
            counts = await asyncio.gather(
                *(ief.count_jobs(pid, job_type=job_type) for pid in project_ids)
            )
        for project_id, total in zip(project_ids, counts, strict=True):
            click.echo(f"{project_id}\t{total}")

    _run(run())


def _detail_fields(project_id: str, detail: BatchJobDetail) -> dict[str, object]:
    def info(pairs: Sequence[ExtensionInfo]) -> list[dict[str, str]]:
        return [{"key": pair.key, "value": pair.value} for pair in pairs]

    return {
        **_job_fields(project_id, detail.to_job()),
        "target_type": detail.target_type,
        "task_data": detail.task_data,
        "tasks": [
            {
                "task_id": task.task_id,
                "task_name": task.task_name,
                "status": str(task.status),
                "reason": task.reason,
                "created_at": task.created_at.isoformat(),
                "target_id": task.target_id,
                "extension_info": info(task.extension_info),
            }
            for task in detail.tasks
        ],
        "targets": [
            {
                "target_id": target.target_id,
                "extension_info": info(target.extension_info),
            }
            for target in detail.targets
        ],
    }


def _detail_tables(project_id: str, detail: BatchJobDetail) -> tuple[Table, Table]:
    job = Table(title=f"Batch job {detail.job_id}", show_header=False)
    job.add_column("field")
    job.add_column("value")
    for name, value in _detail_fields(project_id, detail).items():
        if name not in {"tasks", "targets"}:
            job.add_row(name, str(value))
    tasks = Table(title=f"{len(detail.tasks)} tasks")
    for column in ("task", "status", "target", "created (UTC)", "reason"):
        tasks.add_column(column)
    for task in detail.tasks:
        tasks.add_row(
            task.task_name,
            str(task.status),
            task.target_id,
            task.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            task.reason,
        )
    return job, tasks


@main.command()
@_connection_options
@click.argument("project_id", callback=_PROJECT_ID_CHECK)
@click.argument("job_id", callback=_checked(check_job_id))
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json"]),
    default=None,
    help="table for people, json for pipes (default: table on a terminal).",
)
def show(
    project_id: str,
    job_id: str,
    endpoint: str | None,
    region: str | None,
    instance_id: str | None,
    insecure: bool,
    output: str | None,
) -> None:
    """Show one batch job of PROJECT_ID with its tasks and targets (one request)."""
    output = output or ("table" if sys.stdout.isatty() else "json")
    client = _make_client(endpoint, region, instance_id, insecure)

    async def run() -> BatchJobDetail:
        async with client as ief:
            return await ief.get_job(project_id, job_id)

    detail = _run(run())
    if output == "json":
        sys.stdout.buffer.write(
            orjson.dumps(_detail_fields(project_id, detail)) + b"\n"
        )
        sys.stdout.flush()
    else:
        console = Console()
        for table in _detail_tables(project_id, detail):
            console.print(table)


def _shard(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    if value is None:
        return None
    # ASCII digits only: int() would take "1_0" and other scripts' digits too
    found = _SHARD.fullmatch(value)
    if found is None:
        msg = f"give INDEX/COUNT with INDEX from 0, such as 2/8, not {value!r}"
        raise click.BadParameter(msg)
    index, count = int(found.group(1)), int(found.group(2))
    if count < 1:
        msg = f"COUNT must be at least 1, not {count}"
        raise click.BadParameter(msg)
    if index >= count:
        msg = (
            f"there is no shard {value}: INDEX counts from 0, so the last of "
            f"{count} shards is {count - 1}/{count}"
        )
        raise click.BadParameter(msg)
    return index, count


_SHARD: Final = re.compile(r"([0-9]{1,9})/([0-9]{1,9})", re.ASCII)


def _checkpoint(state: str) -> Checkpoint:
    """A Redis URL names a shared Redis, a plain path a SQLite file (see
    `parse_state_location`); anything else is a usage error."""
    try:
        location = parse_state_location(state)
    except (TypeError, ValueError) as exc:
        raise _CommandError(f"--state: {exc}", usage=True) from None
    if location.kind == "redis":
        try:
            return RedisCheckpoint.from_url(location.target)
        except ImportError:
            msg = "a Redis --state needs the redis extra: pip install 'ief-jobs[redis]'"
            raise _CommandError(msg, usage=True) from None
    return SqliteCheckpoint(location.target)


def _sink(url: str, state: str | None) -> RedisStreamSink:
    """``redis-stream://HOST:PORT/DB?stream=NAME`` (or ``rediss-stream://``)."""
    if state is None:  # each start would be a silent baseline: changes lost
        msg = (
            "--sink needs --state (or IEF_JOBS_STATE): without a state, what "
            "changes while the watch is down never reaches the stream"
        )
        raise click.UsageError(msg)
    scheme, sep, rest = url.partition("-stream://")
    base, _, query = rest.partition("?")
    names = [
        v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "stream"
    ]
    if scheme not in {"redis", "rediss"} or not sep or len(names) != 1 or not names[0]:
        # never the URL itself: it may hold a password
        msg = "give --sink as redis-stream://HOST:PORT/DB?stream=NAME"
        raise click.UsageError(msg)
    try:
        return RedisStreamSink.from_url(f"{scheme}://{base}", stream=names[0])
    except ImportError:
        msg = "--sink needs the redis extra: pip install 'ief-jobs[redis]'"
        raise click.UsageError(msg) from None


def _store_name(exc: Exception, state: str | None, *, redis_state: bool) -> str:
    """The store that failed, named without its URL (it may hold a password)."""
    if redis_state:
        return "--state the Redis state"
    if state is None or not isinstance(exc, sqlite3.Error | OSError):
        return "--sink the Redis stream"  # the one Redis in this watch
    return f"--state {state}"


def _state_errors() -> tuple[type[Exception], ...]:
    """What a checkpoint store raises when it cannot be used."""
    errors: tuple[type[Exception], ...] = (sqlite3.Error, OSError)
    with contextlib.suppress(ImportError):  # the redis extra is optional
        from redis.exceptions import RedisError  # noqa: PLC0415

        errors += (RedisError,)
    return errors


def _metrics_reader() -> InMemoryMetricReader:
    try:
        return metrics_reader()
    except ImportError as exc:
        raise click.UsageError(str(exc)) from None


_DAEMON_OPTIONS = (
    click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        help="Serve /metrics and /healthz on this port (0 picks one, shown on "
        "stderr). Needs the daemon extra.",
    ),
    click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        help="Address to serve /metrics and /healthz on.",
    ),
    click.option(
        "-v", "--verbose", count=True, help="Log to stderr (-v INFO, -vv DEBUG)."
    ),
    click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: each log line one JSON object.",
    ),
)


def _daemon_options(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_DAEMON_OPTIONS):
        func = option(func)
    return func


@contextlib.contextmanager
def _sigterm_cancels(task: asyncio.Task[Any]) -> Iterator[Callable[[], bool]]:
    """
    While inside, SIGTERM cancels *task*: a process manager's stop is a clean
    stop (the event in hand counts as taken), as Ctrl-C is. Yields whether it came.
    """
    loop = asyncio.get_running_loop()
    came = False

    def terminate() -> None:
        nonlocal came
        came = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except NotImplementedError:  # Windows: SIGTERM ends the process as before
        yield lambda: False
        return
    try:
        yield lambda: came
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


@main.command()
@_client_options
@click.option(
    "--interval",
    type=_Seconds(minimum=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between polls.",
)
@click.option("--job-type", type=click.Choice(_JOB_TYPES), help="Only this type.")
@click.option("--emit-existing", is_flag=True, help="First, a created event per job.")
@click.option("--only-unfinished", is_flag=True, help="Follow only jobs not final yet.")
@click.option(
    "--state",
    envvar="IEF_JOBS_STATE",
    help="Resume from and keep state here: a SQLite file, or a redis:// URL "
    "shared by shards (or set IEF_JOBS_STATE, to keep a password out of ps).",
)
@click.option(
    "--sink",
    envvar="IEF_JOBS_SINK",
    metavar="redis-stream://HOST:PORT/DB?stream=NAME",
    help="Also append each job event, once, to this Redis Stream (or set "
    "IEF_JOBS_SINK, to keep a password out of ps): exactly once with a Redis "
    "--state on the same server, else repeats dropped by event_id.",
)
@click.option(
    "--reset-state",
    is_flag=True,
    help="Start the --state over: after changing the endpoint, instance, "
    "--job-type or --only-unfinished it was kept for (it is refused otherwise).",
)
@click.option(
    "--lease-ttl",
    type=_Seconds(),
    help="Seconds a Redis --state stays owned by this watcher without a poll "
    "(default: three intervals, at least 10); a second watcher fails at start.",
)
@click.option(
    "--shard",
    callback=_shard,
    metavar="INDEX/COUNT",
    help="Watch only this shard of the projects, such as 2/8 (INDEX from 0).",
)
@click.option(
    "--max-events", type=click.IntRange(min=1), help="Stop after this many events."
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["lines", "jsonl"]),
    default=None,
    help="lines for people, jsonl for pipes (default: lines on a terminal).",
)
@_daemon_options
def watch(
    project_ids: tuple[str, ...],
    endpoint: str | None,
    region: str | None,
    instance_id: str | None,
    insecure: bool,
    interval: float,
    job_type: str | None,
    emit_existing: bool,
    only_unfinished: bool,
    state: str | None,
    sink: str | None,
    reset_state: bool,
    lease_ttl: float | None,
    shard: tuple[int, int] | None,
    max_events: int | None,
    output: str | None,
    metrics_port: int | None,
    metrics_host: str,
    verbose: int,
    log_format: str,
) -> None:
    """
    Print the changes of PROJECT_IDS' batch jobs as they happen.

    With --state, a restart resumes: it prints what changed meanwhile, and
    nothing it printed before. A line counts as taken once written and
    flushed: after a crash at most the line being printed comes again (its
    event_id lets a reader drop it); a line whose write fails (the reader is
    gone) is not taken, and the command ends quietly. Lines already in a
    pipe's buffer when its reader dies are lost to that reader (up to 64 KiB,
    hundreds of lines): for a guarantee use --sink, which writes each change
    to a Redis Stream once. Ctrl-C and SIGTERM stop cleanly.
    With --metrics-port it serves /metrics (Prometheus) and /healthz (200
    while a poll round succeeded within three intervals).
    """
    output = output or ("lines" if sys.stdout.isatty() else "jsonl")
    configure_logging(verbose, log_format)
    # before the client: it reports to the global meter provider this sets
    reader = None if metrics_port is None else _metrics_reader()
    health = WatchHealth(interval)
    client = _make_client(endpoint, region, instance_id, insecure)
    checkpoint = None if state is None else _checkpoint(state)
    stream = None if sink is None else _sink(sink, state)
    _warn_if_idle(shard, project_ids)

    async def run() -> None:
        main_task = asyncio.current_task()
        assert main_task is not None  # noqa: S101 (asyncio.run's task)
        async with contextlib.AsyncExitStack() as stack:
            terminated = stack.enter_context(_sigterm_cancels(main_task))
            ief = await stack.enter_async_context(client)
            events = ief.watch_jobs(  # arguments checked here, before any request
                project_ids,
                interval=interval,
                job_type=job_type,
                emit_existing=emit_existing,
                only_unfinished=only_unfinished,
                checkpoint=checkpoint,
                sink=stream,
                shard=shard,
                reset_state=reset_state,
                lease_ttl=lease_ttl,
                health=health,
            )
            if checkpoint is not None:
                stack.push_async_callback(checkpoint.aclose)
            if stream is not None:
                stack.push_async_callback(stream.aclose)
            if reader is not None and metrics_port is not None:
                await _serve_metrics(stack, metrics_host, metrics_port, reader, health)
            try:
                await _print_events(events, output, max_events)
            except asyncio.CancelledError:
                if not terminated():
                    raise
            except BrokenPipeError:
                _reader_gone()
            except _state_errors() as exc:
                where = _store_name(
                    exc, state, redis_state=isinstance(checkpoint, RedisCheckpoint)
                )
                raise _CommandError(f"{where}: {exc}") from None

    if output == "lines" and not emit_existing and state is None:
        click.echo(_BASELINE_NOTE.format(interval=interval), err=True)
    with contextlib.suppress(KeyboardInterrupt):
        _run(run())


async def _serve_metrics(
    stack: contextlib.AsyncExitStack,
    host: str,
    port: int,
    reader: InMemoryMetricReader,
    health: WatchHealth,
) -> None:
    """/metrics and /healthz on *host*:*port* for as long as *stack* lasts."""
    try:
        bound = await stack.enter_async_context(serve(host, port, reader, health))
    except OSError as exc:  # taken, or not this machine's address
        raise _CommandError(f"--metrics-port {host}:{port}: {exc}") from None
    click.echo(
        f"ief-jobs: serving http://{host}:{bound}/metrics and /healthz", err=True
    )


def _warn_if_idle(shard: tuple[int, int] | None, project_ids: Sequence[str]) -> None:
    """A shard that gets none of the projects waits for nothing: say so, once,
    rather than sit silent."""
    if shard is not None and all(
        shard_of(p, shard[1]) != shard[0] for p in project_ids
    ):
        click.echo(
            f"ief-jobs: warning: shard {shard[0]}/{shard[1]} gets none of the "
            f"{len(set(project_ids))} projects given; it has nothing to watch",
            err=True,
        )


def _reader_gone() -> None:
    """
    The reader of stdout went away (``watch | head``): end quietly, as ``list
    | head`` does. The line that failed was not taken: it comes first next time.
    """
    # what is left in our buffer can never be written: point stdout at
    # /dev/null, so that the interpreter's last flush does not complain
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# Said once to a person: a first poll that prints nothing looks like a hang,
# and the emulator's jobs stand still unless it runs with --running.
_BASELINE_NOTE: Final = (
    "ief-jobs: the first poll is a baseline and prints nothing; each change after "
    "it prints a line (a poll every {interval:g} s). Against the emulator, "
    "`ief-jobs emulator --running` makes jobs move."
)


class _OutputError(Exception):
    """Stdout refused a line (its OSError is the cause): not a store's error."""


async def _print_events(
    events: Stream[JobEvent], output: str, max_events: int | None
) -> None:
    # async with, not aclosing: a line that cannot be written (EPIPE) leaves
    # the block with an exception, so the watch keeps it for redelivery
    async with events:
        seen = 0
        async for event in events:
            try:
                if output == "jsonl":
                    sys.stdout.buffer.write(_event_json(event) + b"\n")
                else:
                    click.echo(_event_line(event))
                sys.stdout.flush()  # a pipe hears each event as it comes
            except BrokenPipeError:
                raise
            except OSError as exc:  # stdout's, never the state's or the sink's
                raise _OutputError from exc
            seen += 1
            if seen == max_events:
                break


@main.command()
@click.option(
    "--port", type=_PORT, default=0, show_default=True, help="0 picks a free port."
)
@click.option("--projects", type=_PROJECTS, default=3, show_default=True)
@_jobs_option(250)
@click.option("--seed", default=0, show_default=True)
@_latency_option(0.0, "Seconds per answer.")
@click.option("--page-cap", type=click.IntRange(min=1), help="Most records per page.")
@click.option("--token", envvar="IEF_EMULATOR_TOKEN", help="Token to accept.")
@click.option(
    "--running", is_flag=True, help="Jobs run: statuses advance within minutes."
)
@click.option(
    "--new-jobs-per-hour",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="With --running: new jobs per project per hour.",
)
@click.option(
    "--stragglers",
    type=click.IntRange(min=0),
    default=DEFAULT_STRAGGLERS,
    show_default=True,
    help="Old unfinished jobs per project, deep in its list.",
)
def emulator(
    port: int,
    projects: int,
    jobs: int,
    seed: int,
    latency: float,
    page_cap: int | None,
    token: str | None,
    running: bool,
    new_jobs_per_hour: float,
    stragglers: int,
) -> None:
    """Serve the IEF emulator on 127.0.0.1 until interrupted."""
    if new_jobs_per_hour and not running:
        raise click.UsageError("--new-jobs-per-hour needs --running")

    async def serve() -> None:
        faults = Faults(latency=latency, page_cap=page_cap)
        server = Emulator(
            projects=projects,
            jobs=jobs,
            seed=seed,
            port=port,
            token=token,
            faults=faults,
            running=running,
            new_jobs_per_hour=new_jobs_per_hour,
            stragglers=stragglers,
        )
        try:
            await server.start()
        except OSError as exc:  # the port is taken, or not ours to take
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise _CommandError(
                f"cannot listen on 127.0.0.1:{port}: {reason}"
            ) from None
        async with server:
            info = server.info()
            key = info["access_key"]
            # first line for scripts, then the same in words
            click.echo(json.dumps(info))
            click.echo(
                f"IEF emulator at {info['base_url']}\n"
                f"  export IEF_ENDPOINT={info['base_url']} IEF_TOKEN={info['token']}\n"
                f"  or, to sign with AK/SK instead of the token:\n"
                f"  export HUAWEICLOUD_SDK_AK={key['access_key']} "
                f"HUAWEICLOUD_SDK_SK={key['secret_key']}\n"
                f"  ief-jobs list {info['project_ids'][0]}\n"
                f"Projects: {' '.join(info['project_ids'])}\nCtrl-C stops it.",
            )
            sys.stdout.flush()
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        _run(serve())
