"""
One voice for the command: every error, whatever its cause (a flag, the
environment, a state location, the server), is one line ``ief-jobs: error:
...`` on stderr with exit code 2 for usage and 1 for a failure, and never a
traceback or a secret.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import _env, _served  # noqa: F401 (the fixture, shared)

from ief_jobs import IefClient
from ief_jobs import cli as cli_module
from ief_jobs.cli import main
from ief_jobs.emulator import Emulator
from ief_jobs.watch import shard_of

SECRET = "hunter2"  # noqa: S105 (a fake, checked to never show)
P = "p1"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_CLOSED = _closed_port()  # nothing listens there once the probe is closed

# (arguments, environment on top of a working one, exit code, text in the line)
CASES: list[tuple[list[str], dict[str, str | None], int, str]] = [
    # flags
    (["list", "--page-size", "1001", P], {}, 2, "1<=x<=1000"),
    (["list", "--page-size", "0", P], {}, 2, "--page-size"),
    (["list", "--no-such-flag", P], {}, 2, "--no-such-flag"),
    (["list"], {}, 2, "PROJECT_IDS"),
    (["list", "../x"], {}, 2, "project_id"),
    (["show", P, "../x"], {}, 2, "job_id"),
    (["no-such-command"], {}, 2, "no-such-command"),
    (["watch", "--shard", "1_0/20", P], {}, 2, "--shard"),
    (["watch", "--shard", "\u0661/\u0662", P], {}, 2, "--shard"),
    (["watch", "--shard", "2/2", P], {}, 2, "1/2"),
    (["watch", "--shard", "0/0", P], {}, 2, "COUNT"),
    (["watch", "--interval", "inf", P], {}, 2, "--interval"),
    (["list", "--endpoint", "ftp://host", P], {}, 2, "endpoint"),
    (["list", "--region", "Not A Region", P], {}, 2, "region"),
    (
        ["list", "--region", "cn-north-4", "--endpoint", "http://h", P],
        {},
        2,
        "not both",
    ),
    # the environment
    (["list", P], {"IEF_TOKEN": "tok\r"}, 2, "IEF_TOKEN"),
    (["list", P], {"IEF_TOKEN": " tok"}, 2, "IEF_TOKEN"),
    (
        ["list", P],
        {"HUAWEICLOUD_SDK_AK": " AK", "HUAWEICLOUD_SDK_SK": "sk"},
        2,
        "HUAWEICLOUD_SDK_AK",
    ),
    (
        ["count", P],
        {"HUAWEICLOUD_SDK_AK": "AK", "HUAWEICLOUD_SDK_SK": "sk\n"},
        2,
        "HUAWEICLOUD_SDK_SK",
    ),
    (["list", P], {"IEF_TOKEN": None}, 2, "IEF_TOKEN"),
    (["list", P], {"IEF_ENDPOINT": "not a url"}, 2, "endpoint"),
    (["list", P], {"IEF_ENDPOINT": None, "IEF_REGION": "Bad Region"}, 2, "region"),
    (["list", P], {"IEF_ENDPOINT": None, "IEF_REGION": None}, 2, "IEF_REGION"),
    # state locations
    (["watch", "--state", f"redis:{SECRET}@host:6379", P], {}, 2, "'redis:'"),
    (["watch", P], {"IEF_JOBS_STATE": f"redis+sentinel://:{SECRET}@h"}, 2, "sentinel"),
    (["watch", "--state", f"a:{SECRET}", P], {}, 2, "'a:'"),
    (["watch", "--state", f"http://u:{SECRET}@h/", P], {}, 2, "'http:'"),
    (
        ["watch", "--state", f"Redis://:{SECRET}@127.0.0.1:{_CLOSED}/0"],
        {},
        1,
        "the Redis state",
    ),
    (
        ["watch", "--state", f"REDIS://:{SECRET}@127.0.0.1:{_CLOSED}/0"],
        {},
        1,
        "the Redis state",
    ),
]


@pytest.mark.parametrize(("arguments", "extra", "code", "text"), CASES)
def test_every_error_is_one_line(
    served: Emulator,
    arguments: list[str],
    extra: dict[str, str | None],
    code: int,
    text: str,
) -> None:
    """A table of bad flags, environment values and state locations: each is
    exactly one line on stderr, with its exit code, no traceback, no secret."""
    if arguments[0] == "watch":
        # a watch that wrongly starts ends at its first event, not never
        arguments = ["watch", "--emit-existing", "--max-events", "1", *arguments[1:]]
        if arguments[-1] != P:
            arguments.append(served.project_ids[0])
    result = CliRunner().invoke(main, arguments, env=_env(served, **extra))

    assert code == result.exit_code, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("ief-jobs: error: "), line
    assert text in line
    assert "" == result.stdout
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for secret in (SECRET, "tok", " AK", "sk\n"):
        assert secret not in line.removeprefix("ief-jobs: error: ").split(" (see")[0]


def test_a_state_file_that_cannot_be_opened(served: Emulator, tmp_path: Path) -> None:
    """A SQLite file in a missing directory: a failure (1), named by its path."""
    state = str(tmp_path / "missing" / "watch.db")
    result = CliRunner().invoke(
        main, ["watch", "--state", state, served.project_ids[0]], env=_env(served)
    )

    assert 1 == result.exit_code
    said = f"state file {state} cannot be opened: No such file or directory"
    assert [f"ief-jobs: error: {said}"] == result.stderr.splitlines()


class TestClientFromEnvironment:
    def test_ief_region_is_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without --endpoint or IEF_ENDPOINT, IEF_REGION picks the endpoint."""
        monkeypatch.delenv("IEF_ENDPOINT", raising=False)
        monkeypatch.setenv("IEF_REGION", "cn-south-1")
        monkeypatch.setenv("IEF_TOKEN", "tok")
        monkeypatch.delenv("HUAWEICLOUD_SDK_AK", raising=False)

        client = cli_module._make_client(None, None, None, insecure=False)

        assert "https://ief.cn-south-1.myhuaweicloud.com" == str(client.endpoint)

    def test_a_flag_wins_over_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--region beats IEF_ENDPOINT, --endpoint beats IEF_REGION."""
        monkeypatch.setenv("IEF_ENDPOINT", "http://127.0.0.1:1")
        monkeypatch.setenv("IEF_REGION", "cn-south-1")
        monkeypatch.setenv("IEF_TOKEN", "tok")
        monkeypatch.delenv("HUAWEICLOUD_SDK_AK", raising=False)

        by_region = cli_module._make_client(
            None, "ap-southeast-1", None, insecure=False
        )
        by_endpoint = cli_module._make_client("http://h:2", None, None, insecure=False)

        assert "ief.ap-southeast-1.myhuaweicloud.com" == by_region.endpoint.host
        assert "http://h:2" == str(by_endpoint.endpoint)


def test_a_value_error_mid_stream_is_a_failure(
    served: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ValueError raised while the listing runs is exit code 1, not a usage
    error: the arguments were checked before anything ran."""

    async def half_then_fail(*_: Any, **__: Any) -> AsyncGenerator[Any, None]:
        raise ValueError("something inside broke")
        yield  # pragma: no cover

    monkeypatch.setattr(IefClient, "iter_jobs_many", half_then_fail)
    result = CliRunner().invoke(
        main, ["list", "--format", "jsonl", served.project_ids[0]], env=_env(served)
    )

    assert 1 == result.exit_code
    assert ["ief-jobs: error: something inside broke"] == result.stderr.splitlines()


def _command(*arguments: str) -> list[str]:
    return [sys.executable, "-c", "from ief_jobs.cli import main; main()", *arguments]


def _process_env(served: Emulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_")}
    return env | {"IEF_ENDPOINT": served.base_url, "IEF_TOKEN": served.token}


@pytest.mark.parametrize(
    "arguments",
    [["list", "--format", "jsonl"], ["watch", "--emit-existing", "--format", "jsonl"]],
)
def test_a_closed_stdout_ends_quietly(served: Emulator, arguments: list[str]) -> None:
    """``ief-jobs list ... | head -1``: the reader leaves, the command ends
    without a word on stderr (and a watch's is no "state" error)."""
    with subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        _command(*arguments, *served.project_ids),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_process_env(served),
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        assert process.stdout.readline().startswith(b"{")
        process.stdout.close()  # the reader is gone, most lines still unwritten
        errors = process.stderr.read()
        code = process.wait(30)

    assert b"" == errors
    assert code in {0, 1}


def _the_one_error_line(served: Emulator, *arguments: str, stdout: Any = None) -> str:
    """Run the CLI over every project: it must fail (1) with one stderr line."""
    done = subprocess.run(  # noqa: S603 (our own interpreter and module)
        _command(*arguments, *served.project_ids),
        stdout=subprocess.DEVNULL if stdout is None else stdout,
        stderr=subprocess.PIPE,
        env=_process_env(served),
        timeout=60,
        check=False,
    )
    lines = done.stderr.decode().splitlines()
    assert 1 == done.returncode
    assert 1 == len(lines), lines
    return lines[0]


@pytest.mark.parametrize(
    "arguments",
    [
        ["list", "--format", "jsonl"],
        ["count"],
        ["watch", "--emit-existing", "--format", "jsonl", "--max-events", "5"],
    ],
)
def test_a_stdout_that_refuses_lines_is_one_error_line(
    served: Emulator, arguments: list[str]
) -> None:
    """Stdout on a full disk (/dev/full): one line, exit 1, never a traceback,
    and a watch's is not blamed on a state or a sink."""
    with Path("/dev/full").open("wb") as full:
        line = _the_one_error_line(served, *arguments, stdout=full)

    assert line.startswith("ief-jobs: error: cannot write the output: ")
    assert "No space left on device" in line


def test_a_metrics_port_in_use_is_one_error_line(served: Emulator) -> None:
    """--metrics-port on a port another program holds: one line naming it,
    exit 1, no traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = _the_one_error_line(served, "watch", "--metrics-port", str(port))

    assert line.startswith(f"ief-jobs: error: --metrics-port 127.0.0.1:{port}: ")


def test_a_shard_with_no_project_says_so(served: Emulator) -> None:
    """More shards than projects: the empty shard says so in one line, then
    waits as the others do (a clean stop on SIGTERM)."""
    count = 16
    taken = {shard_of(pid, count) for pid in served.project_ids}
    empty = min(set(range(count)) - taken)
    with subprocess.Popen(  # noqa: S603
        _command("watch", "--shard", f"{empty}/{count}", *served.project_ids),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_process_env(served),
    ) as process:
        assert process.stderr is not None
        # bounded wait: a shard that says nothing must fail the test, not hang it
        ready, _, _ = select.select([process.stderr], [], [], 20)
        line = process.stderr.readline().decode() if ready else ""
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        process.wait(30)

    assert line.startswith(f"ief-jobs: warning: shard {empty}/{count} gets none")
    assert b"" == rest


_ENV_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)


@settings(max_examples=30)
@given(
    name=st.sampled_from(
        [
            "IEF_TOKEN",
            "HUAWEICLOUD_SDK_AK",
            "HUAWEICLOUD_SDK_SK",
            "HUAWEICLOUD_SDK_SECURITY_TOKEN",
            "IEF_ENDPOINT",
            "IEF_REGION",
        ]
    ),
    value=_ENV_TEXT,
)
def test_no_environment_value_gives_a_traceback(
    served: Emulator, name: str, value: str
) -> None:
    """Whatever one variable holds, the command succeeds or says one line."""
    extra: dict[str, str | None] = {name: value}
    if name.startswith("HUAWEICLOUD_SDK"):  # the AK/SK pair is looked at only whole
        key = served.access_key
        extra = {"HUAWEICLOUD_SDK_AK": key.access_key, "HUAWEICLOUD_SDK_SK": "s"}
        extra[name] = value
    result = CliRunner().invoke(
        main, ["count", served.project_ids[0]], env=_env(served, **extra)
    )

    assert result.exception is None or isinstance(result.exception, SystemExit)
    if result.exit_code != 0:
        [line] = result.stderr.splitlines()
        assert line.startswith("ief-jobs: error: ")
