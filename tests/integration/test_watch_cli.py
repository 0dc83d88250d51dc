"""``ief-jobs watch`` with --state, --shard and event ids, run in process."""

from __future__ import annotations

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
        assert f"--state {state}: unable to open database file" in output
        assert "Traceback" not in output

    def test_a_redis_state_error_shows_no_password(self, served: Emulator) -> None:
        """Nothing listens on port 1: the error names the store, not the URL."""
        code, _, output = _watch(
            served, "--state", "redis://:hunter2@127.0.0.1:1/0", served.project_ids[0]
        )

        assert 1 == code
        assert "--state the Redis state:" in output
        assert "hunter2" not in output
