"""``ief-jobs watch`` with --state, --shard and event ids, run in process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
from click.testing import CliRunner
from test_cli import _env, _served  # noqa: F401 (the fixture, shared)

from ief_jobs.cli import main
from ief_jobs.emulator import Emulator
from ief_jobs.watch import shard_of


def _watch(served: Emulator, *args: str) -> tuple[int, list[dict[str, object]], str]:
    result = CliRunner().invoke(
        main, ["watch", "--format", "jsonl", *args], env=_env(served)
    )
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    return result.exit_code, lines, result.output


class TestWatchCommand:
    def test_every_line_carries_its_event_id(self, served: Emulator) -> None:
        code, lines, output = _watch(
            served, "--emit-existing", "--max-events", "3", served.project_ids[0]
        )

        assert 0 == code, output
        assert 3 == len({line["event_id"] for line in lines})
        assert all(len(str(line["event_id"])) == 32 for line in lines)

    def test_state_resumes_where_the_last_run_stopped(
        self, served: Emulator, tmp_path: Path
    ) -> None:
        """Two runs of three events on one --state file: the second goes on
        with the fourth, same ids as one run of six would give."""
        state = str(tmp_path / "watch.db")
        pid = served.project_ids[0]
        runs = [
            _watch(
                served, "--state", state, "--emit-existing", "--max-events", "3", pid
            )
            for _ in range(2)
        ]
        _, whole, _ = _watch(served, "--emit-existing", "--max-events", "6", pid)

        assert [0, 0] == [code for code, _, _ in runs]
        assert [line["event_id"] for line in whole] == [
            line["event_id"] for _, lines, _ in runs for line in lines
        ]

    def test_shard_keeps_its_projects(self, served: Emulator) -> None:
        ids = served.project_ids
        index = shard_of(ids[0], 2)
        code, lines, output = _watch(
            served,
            "--shard",
            f"{index}/2",
            "--emit-existing",
            "--max-events",
            "5",
            *ids,
        )

        assert 0 == code, output
        assert {ids[0]} | {p for p in ids if shard_of(p, 2) == index} == {
            line["project_id"] for line in lines
        }

    def test_a_bad_shard_is_a_usage_error_before_any_request(
        self, served: Emulator
    ) -> None:
        before = served.stats.requests
        for shard in ("8/8", "2", "a/b"):
            code, _, output = _watch(served, "--shard", shard, *served.project_ids)

            assert 2 == code, output
            assert "shard" in output.lower()
        assert before == served.stats.requests

    def test_a_state_that_cannot_be_opened_is_one_error_line(
        self, served: Emulator, tmp_path: Path
    ) -> None:
        state = str(tmp_path / "missing" / "watch.db")
        code, _, output = _watch(served, "--state", state, served.project_ids[0])

        assert 1 == code
        assert (
            f"ief-jobs: error: state file {state} cannot be opened: "
            "No such file or directory\n"
        ) == output
        assert "Traceback" not in output

    def test_a_redis_state_error_shows_no_password(self, served: Emulator) -> None:
        """Nothing listens on port 1: the error names the store, not the URL."""
        code, _, output = _watch(
            served, "--state", "redis://:hunter2@127.0.0.1:1/0", served.project_ids[0]
        )

        assert 1 == code
        assert "--state the Redis state:" in output
        assert "hunter2" not in output


class TestWatchStateProblems:
    """Issue 20: the state's scope, damage and pipes, from the command line."""

    def test_another_job_type_is_one_line_and_nothing_printed(
        self, served: Emulator, tmp_path: Path
    ) -> None:
        """--job-type changed on the same --state: refused, no false events;
        --reset-state starts it over (case 3)."""
        state = str(tmp_path / "w.db")
        pid = served.project_ids[0]
        first = ["--state", state, "--max-events", "1", "--emit-existing", pid]
        code, _, output = _watch(served, "--job-type", "node_upgrade", *first)
        assert 0 == code, output

        code, lines, output = _watch(
            served, "--job-type", "deployment_deploy", "--state", state, pid
        )
        assert (1, []) == (code, lines)
        assert output.startswith(f"ief-jobs: error: state file {state}: project {pid}")
        assert "job_type='node_upgrade'" in output
        assert 1 == output.count("\n")

        again = ["--reset-state", "--emit-existing", "--max-events", "2"]
        code, lines, output = _watch(
            served, "--job-type", "deployment_deploy", *again, "--state", state, pid
        )
        assert (0, 2) == (code, len(lines)), output
        assert {"created"} == {line["kind"] for line in lines}

    def test_a_damaged_state_is_one_line(
        self, served: Emulator, tmp_path: Path
    ) -> None:
        """A negative taken: one line naming the file, exit 1 (case 7: a
        125-line traceback)."""
        state = tmp_path / "w.db"
        pid = served.project_ids[0]
        _watch(
            served, "--state", str(state), "--emit-existing", "--max-events", "1", pid
        )
        with sqlite3.connect(state) as db:
            db.execute("UPDATE ief_projects SET taken = -1")

        code, _, output = _watch(served, "--state", str(state), pid)

        assert 1 == code
        assert output.startswith(f"ief-jobs: error: state file {state}, project {pid}")
        assert 1 == output.count("\n")

    def test_a_refused_token_fails_at_once(self, served: Emulator) -> None:
        """Every project refuses the token on the first poll: exit 1, the
        error on one line, at once (case 9: silence, then for ever)."""
        result = CliRunner().invoke(
            main,
            ["watch", "--format", "jsonl", *served.project_ids],
            env=_env(served, IEF_TOKEN="wrong"),
        )

        assert 1 == result.exit_code
        lines = [orjson.loads(line) for line in result.stdout.splitlines()]
        assert ["project_failed"] * 2 == [line["kind"] for line in lines]
        assert result.stderr.startswith("ief-jobs: error: HTTP 401")
        assert 1 == result.stderr.count("\n")

    def test_a_reader_that_goes_away_ends_it_quietly(
        self, served: Emulator, tmp_path: Path
    ) -> None:
        """watch | head -1: the write that fails ends the command with no
        traceback and exit 0, as list | head (case 2)."""
        env = {
            **os.environ,
            **{k: v for k, v in _env(served).items() if v is not None},
        }
        for name in ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK"):
            env.pop(name, None)
        args = ["--state", str(tmp_path / "w.db"), "--emit-existing"]
        with subprocess.Popen(  # noqa: S603 (our own interpreter)
            [sys.executable, "-c", "from ief_jobs.cli import main; main()",
             "watch", "--format", "jsonl", *args, *served.project_ids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        ) as child:  # fmt: skip
            assert child.stdout is not None
            assert child.stderr is not None
            first = child.stdout.readline()
            child.stdout.close()
            errors = child.stderr.read()
            code = child.wait(60)

        assert "created" == orjson.loads(first)["kind"]
        assert (0, b"") == (code, errors)

    def test_a_sink_without_a_state_is_a_usage_error(self, served: Emulator) -> None:
        """Without --state a restart is a silent baseline: what changed while
        the watch was down would never reach the stream."""
        sink = "redis-stream://127.0.0.1:1/0?stream=s"
        code, _, output = _watch(served, "--sink", sink, served.project_ids[0])

        assert 2 == code, output
        assert "--sink needs --state" in output

    def test_a_bad_sink_is_a_usage_error_without_the_url(
        self, served: Emulator, tmp_path: Path
    ) -> None:
        """--sink must be redis-stream://...?stream=NAME; the message never
        repeats the URL (it may hold a password)."""
        state = str(tmp_path / "w.db")
        for sink in ("redis://:hunter2@h:1/0", "redis-stream://:hunter2@h:1/0"):
            code, _, output = _watch(
                served, "--state", state, "--sink", sink, served.project_ids[0]
            )

            assert 2 == code, output
            assert "redis-stream://HOST:PORT/DB?stream=NAME" in output
            assert "hunter2" not in output

    def test_a_sink_that_cannot_be_reached_is_named_without_its_password(
        self, served: Emulator, tmp_path: Path
    ) -> None:
        code, _, output = _watch(
            served,
            "--state",
            str(tmp_path / "w.db"),
            "--sink",
            "redis-stream://:hunter2@127.0.0.1:1/0?stream=s",
            "--emit-existing",
            served.project_ids[0],
        )

        assert 1 == code
        assert "--sink the Redis stream:" in output
        assert "hunter2" not in output
