"""The ief-jobs command, run against the emulator on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import aiohttp
import orjson
import pytest
from click.testing import CliRunner

from _support import served_in_thread
from ief_jobs import IefClient, RetryPolicy
from ief_jobs import cli as cli_module
from ief_jobs.cli import main
from ief_jobs.emulator import Emulator


@pytest.fixture(name="served", scope="module")
def _served() -> Iterator[Emulator]:
    """An emulator on its own loop in a thread: the CLI runs its own asyncio.run."""
    with served_in_thread(Emulator(projects=2, jobs=150, seed=5)) as emulator:
        yield emulator


def _env(emulator: Emulator, **extra: str | None) -> dict[str, str | None]:
    return {
        "IEF_ENDPOINT": emulator.base_url,
        "IEF_TOKEN": emulator.token,
        # whatever the machine has set must not pick the credentials
        "HUAWEICLOUD_SDK_AK": None,
        "HUAWEICLOUD_SDK_SK": None,
        "HUAWEICLOUD_SDK_SECURITY_TOKEN": None,
        **extra,
    }


class TestList:
    def test_jsonl(self, served: Emulator) -> None:
        """--format jsonl prints one JSON object per job, each project in order."""
        result = CliRunner().invoke(
            main, ["list", "--format", "jsonl", *served.project_ids], env=_env(served)
        )

        assert 0 == result.exit_code, result.output
        rows = [orjson.loads(line) for line in result.stdout.splitlines()]
        assert 300 == len(rows)
        for pid in served.project_ids:
            expected = [j["job_id"] for j in served.jobs(pid)[::-1]]
            assert expected == [r["job_id"] for r in rows if r["project_id"] == pid]

    def test_table(self, served: Emulator) -> None:
        """--format table prints a table for people."""
        result = CliRunner().invoke(
            main,
            ["list", "--format", "table", "--max-items", "3", served.project_ids[0]],
            env=_env(served, COLUMNS="200"),
        )

        assert 0 == result.exit_code, result.output
        assert "3 batch jobs" in result.stdout
        assert served.jobs(served.project_ids[0])[-1]["job_name"] in result.stdout

    def test_error_is_one_line(self, served: Emulator) -> None:
        """A refused token ends in one error line and exit code 1, no traceback."""
        result = CliRunner().invoke(
            main,
            ["list", served.project_ids[0]],
            env=_env(served, IEF_TOKEN="wrong-token"),
        )

        assert 1 == result.exit_code
        [line] = result.stderr.splitlines()
        assert line.startswith("ief-jobs: error: HTTP 401 APIG.0301")
        assert f"project {served.project_ids[0]}" in line
        assert "request " in line
        assert "Traceback" not in result.output
        assert "wrong-token" not in result.output

    def test_aksk_from_the_environment(self, served: Emulator) -> None:
        """HUAWEICLOUD_SDK_AK/SK sign every request; the secret is never printed."""
        key = served.access_key
        env = _env(
            served,
            IEF_TOKEN=None,
            HUAWEICLOUD_SDK_AK=key.access_key,
            HUAWEICLOUD_SDK_SK=key.secret_key,
        )
        result = CliRunner().invoke(
            main, ["list", "--format", "jsonl", *served.project_ids], env=env
        )

        assert 0 == result.exit_code, result.output
        assert 300 == len(result.stdout.splitlines())
        assert key.secret_key not in result.output

    def test_a_wrong_secret_key_is_one_line_without_it(self, served: Emulator) -> None:
        env = _env(
            served,
            IEF_TOKEN=None,
            HUAWEICLOUD_SDK_AK=served.access_key.access_key,
            HUAWEICLOUD_SDK_SK="wrong-secret-key-value",
        )
        result = CliRunner().invoke(main, ["count", served.project_ids[0]], env=env)

        assert 1 == result.exit_code
        [line] = result.stderr.splitlines()
        assert "APIG.0301" in line
        assert "wrong-secret-key-value" not in result.output

    def test_token_is_required(self, served: Emulator) -> None:
        """Without IEF_TOKEN the command says how to give one, exit code 2."""
        result = CliRunner().invoke(
            main, ["list", "p1"], env=_env(served, IEF_TOKEN="")
        )

        assert 2 == result.exit_code
        assert "IEF_TOKEN" in result.output

    @pytest.mark.parametrize("command", ["list", "count"])
    def test_bad_project_id_is_a_usage_error(
        self, served: Emulator, command: str
    ) -> None:
        """A project id that could change the path is refused before any request."""
        before = served.stats.requests
        result = CliRunner().invoke(main, [command, "../admin"], env=_env(served))

        assert 2 == result.exit_code
        assert "project_id must be" in result.output
        assert before == served.stats.requests

    def test_count(self, served: Emulator) -> None:
        """count prints each project's total."""
        result = CliRunner().invoke(
            main, ["count", *served.project_ids], env=_env(served)
        )

        assert 0 == result.exit_code, result.output
        assert [
            f"{pid}\t150" for pid in served.project_ids
        ] == result.stdout.splitlines()

    def test_insecure_warns(self, served: Emulator) -> None:
        """Turning TLS checks off says so on stderr."""
        result = CliRunner().invoke(
            main, ["count", "--insecure", served.project_ids[0]], env=_env(served)
        )

        assert 0 == result.exit_code
        assert "not verified" in result.stderr


def test_demo_runs() -> None:
    """The demo lists every project of its own emulator and prints a summary."""
    result = CliRunner().invoke(
        main, ["demo", "--projects", "3", "--jobs", "300", "--latency", "0"]
    )

    assert 0 == result.exit_code, result.output
    assert "Listed 900 jobs from 3 projects" in result.stdout
    assert "Jobs per status" in result.stdout


@pytest.fixture(name="silent_port")
def _silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that takes connections and never answers them."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes handshakes; nobody reads
        yield listener.getsockname()[1]


class TestArguments:
    @pytest.mark.parametrize(
        ("arguments", "named"),
        [
            (["emulator", "--port", "99999"], "--port"),
            (["emulator", "--port", "-1"], "--port"),
            (["emulator", "--projects", "0"], "--projects"),
            (["emulator", "--jobs", "-5"], "--jobs"),
            (["emulator", "--latency", "-1"], "--latency"),
            (["emulator", "--latency", "inf"], "--latency"),
            (["demo", "--projects", "-1"], "--projects"),
            (["demo", "--jobs", "-1"], "--jobs"),
            (["demo", "--latency", "nan"], "--latency"),
        ],
    )
    def test_a_bad_option_is_a_usage_error(
        self, arguments: list[str], named: str
    ) -> None:
        """Refused by the option itself: exit code 2, the option named, no
        traceback, nothing started."""
        result = CliRunner().invoke(main, arguments)

        assert 2 == result.exit_code, result.output
        assert f"Invalid value for '{named}'" in result.output
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)

    def test_a_port_in_use_is_one_line(self, silent_port: int) -> None:
        """ief-jobs emulator on a taken port: one error line, exit code 1."""
        result = CliRunner().invoke(main, ["emulator", "--port", str(silent_port)])

        assert 1 == result.exit_code, result.output
        assert "" == result.stdout
        expected = f"cannot listen on 127.0.0.1:{silent_port}: Address already in use"
        assert [f"ief-jobs: error: {expected}"] == result.stderr.splitlines()


_TIMEOUT = aiohttp.ClientTimeout(total=0.3)


class TestTimeBound:
    def test_count_against_a_silent_server_gives_up_after_the_bound(
        self, silent_port: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Requests time out after 0.3 s and RetryPolicy(timeout=0.2) counts from
        the first attempt: a retry would start past the bound, so none does.
        (Counted from the first failure, a second attempt would have started.)"""

        class QuickClient(IefClient):
            __slots__ = ()

            def __init__(self, endpoint: str, **kwargs: object) -> None:
                retry = RetryPolicy(timeout=0.2, wait_initial=0.01, wait_jitter=0)
                super().__init__(endpoint, timeout=_TIMEOUT, retry=retry, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(cli_module, "IefClient", QuickClient)
        env = {
            "IEF_ENDPOINT": f"http://127.0.0.1:{silent_port}",
            "IEF_TOKEN": "t",
            "HUAWEICLOUD_SDK_AK": None,
            "HUAWEICLOUD_SDK_SK": None,
        }

        result = CliRunner().invoke(main, ["count", "p1"], env=env)

        assert 1 == result.exit_code, result.output
        assert [
            "ief-jobs: error: timed out (project p1, offset 0)"
        ] == result.stderr.splitlines()


class TestWatch:
    def test_jsonl_events(self, served: Emulator) -> None:
        """watch --emit-existing prints a created event per job, oldest first."""
        result = CliRunner().invoke(
            main,
            [
                "watch",
                "--format",
                "jsonl",
                "--emit-existing",
                "--max-events",
                "5",
                served.project_ids[0],
            ],
            env=_env(served),
        )

        assert 0 == result.exit_code, result.output
        events = [orjson.loads(line) for line in result.stdout.splitlines()]
        oldest = [j["job_id"] for j in served.jobs(served.project_ids[0])[:5]]
        assert oldest == [e["job"]["job_id"] for e in events]
        assert {"created"} == {e["kind"] for e in events}
        assert {served.project_ids[0]} == {e["project_id"] for e in events}

    def test_readable_lines(self, served: Emulator) -> None:
        result = CliRunner().invoke(
            main,
            [
                "watch",
                "--format",
                "lines",
                "--emit-existing",
                "--max-events",
                "2",
                served.project_ids[1],
            ],
            env=_env(served),
        )

        assert 0 == result.exit_code, result.output
        lines = result.stdout.splitlines()
        assert 2 == len(lines)
        assert all("created" in line for line in lines)


class TestShow:
    def _job(self, served: Emulator, index: int = -1) -> dict[str, object]:
        # the newest job runs or waits: its tasks are not all alike
        return served.jobs(served.project_ids[0])[index]

    def test_json(self, served: Emulator) -> None:
        """--format json prints the job as the listing does, plus its tasks and
        targets, one JSON document."""
        job = self._job(served)
        pid = served.project_ids[0]
        result = CliRunner().invoke(
            main,
            ["show", "--format", "json", pid, str(job["job_id"])],
            env=_env(served),
        )

        assert 0 == result.exit_code, result.output
        shown = orjson.loads(result.stdout)
        listed = CliRunner().invoke(
            main,
            ["list", "--format", "jsonl", "--max-items", "1", pid],
            env=_env(served),
        )
        assert orjson.loads(listed.stdout) == {
            k: v for k, v in shown.items() if k not in _DETAIL_ONLY
        }
        assert job["task_total_count"] == len(shown["tasks"]) == len(shown["targets"])
        assert {"task_id", "status", "reason", "created_at", "target_id"} <= set(
            shown["tasks"][0]
        )

    def test_table(self, served: Emulator) -> None:
        """The table names the job and lists each task."""
        job = self._job(served, 0)
        result = CliRunner().invoke(
            main,
            ["show", "--format", "table", served.project_ids[0], str(job["job_id"])],
            env=_env(served),
        )

        assert 0 == result.exit_code, result.output
        assert str(job["job_name"]) in result.stdout
        assert f"{job['task_total_count']} tasks" in result.stdout

    def test_an_unknown_job_is_one_line(self, served: Emulator) -> None:
        """A job the project does not have: one line on stderr, exit code 1."""
        result = CliRunner().invoke(
            main, ["show", served.project_ids[0], "no-such-job"], env=_env(served)
        )

        assert 1 == result.exit_code
        [line] = result.stderr.splitlines()
        assert "IEF.100404" in line
        assert served.token not in result.output

    def test_a_bad_job_id_is_a_usage_error(self, served: Emulator) -> None:
        """A job id that could change the path is refused before any request."""
        before = served.stats.requests
        result = CliRunner().invoke(
            main, ["show", served.project_ids[0], "../admin"], env=_env(served)
        )

        assert 2 == result.exit_code
        assert "job_id must be" in result.output
        assert before == served.stats.requests


_DETAIL_ONLY = {"target_type", "task_data", "tasks", "targets"}


class TestEmulatorCommand:
    def test_new_options_reach_the_emulator(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--running, --new-jobs-per-hour and --stragglers configure the emulator."""
        made: dict[str, object] = {}

        def fake_emulator(**kwargs: object) -> None:
            made.update(kwargs)
            raise KeyboardInterrupt  # as Ctrl-C stops the real one

        monkeypatch.setattr("ief_jobs.cli.Emulator", fake_emulator)
        result = CliRunner().invoke(
            main,
            [
                "emulator",
                "--running",
                "--new-jobs-per-hour",
                "90",
                "--stragglers",
                "5",
            ],
        )

        assert 0 == result.exit_code, result.output
        assert (True, 90.0, 5) == (
            made["running"],
            made["new_jobs_per_hour"],
            made["stragglers"],
        )

    def test_new_jobs_need_running(self) -> None:
        """New jobs arrive only in running mode: asking without it is a usage error."""
        result = CliRunner().invoke(main, ["emulator", "--new-jobs-per-hour", "5"])

        assert 2 == result.exit_code
        assert "--running" in result.output
