"""
``ief-jobs watch --state`` as a separate process, stopped mid-stream and started
again, held to the emulator's own record of every change it made.

The emulator runs in this process in running mode. Its clock moves with the
list requests it serves, not with real time: the world moves only while the
watcher polls (one emulated second per two list requests, while a job's two
changes are at least five seconds apart), so every change is seen by some poll
and the test is as deterministic on a loaded machine as on an idle one. While
the watcher is down the test changes the world itself: a job finishes, one is
created, an old one is deleted; the next run must report all three.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from ief_jobs import JobStatus
from ief_jobs.emulator import Emulator, Stats

BASE = 1_800_000_000.0
PROJECTS = 2


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ListClock:
    """Emulated Unix seconds: one more for every two list requests served after
    the baseline's (one page a project), frozen when the test says so."""

    def __init__(self) -> None:
        self.stats: Stats | None = None
        self.frozen: float | None = None

    def __call__(self) -> float:
        if self.frozen is not None:
            return self.frozen
        lists = 0 if self.stats is None else self.stats.requests_by_call["list"]
        return BASE + max(0, lists - PROJECTS) // 2

    def lists(self) -> int:
        assert self.stats is not None
        return self.stats.requests_by_call["list"]


async def spawn_watcher(
    emulator: Emulator,
    log: Path,
    args: list[str],
    *,
    stdout: int,
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """
    ``ief-jobs watch --format jsonl --interval 0.1 *args* PROJECTS`` as a
    child process on *emulator*, its stderr appended to *log*; the machine's
    own credentials and state left out, *env* added.
    """
    environment = {
        **os.environ,
        "IEF_ENDPOINT": emulator.base_url,
        "IEF_TOKEN": emulator.token,
    }
    for name in ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "IEF_JOBS_STATE"):
        environment.pop(name, None)
    with log.open("ab") as errors:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from ief_jobs.cli import main; main()",
            "watch",
            "--format",
            "jsonl",
            "--interval",
            "0.1",
            *args,
            *emulator.project_ids,
            stdout=stdout,
            stderr=errors,
            env={**environment, **(env or {})},
            # a test run from a background job inherits SIGINT ignored: the
            # child gets Python's own Ctrl-C handling back, as in a terminal
            preexec_fn=_default_sigint,
        )


class Watcher:
    """One run of ``ief-jobs watch`` as a child process; its complete lines."""

    def __init__(self, emulator: Emulator, state: Path, log: Path) -> None:
        self.emulator, self.state, self.log = emulator, state, log
        self.lines: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await spawn_watcher(
            self.emulator,
            self.log,
            ["--state", str(self.state)],
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            if line.endswith(b"\n"):  # a line cut off by a kill was not delivered
                self.lines.append(orjson.loads(line))

    async def wait_for(self, condition: Any, what: str) -> None:
        """Until *condition()*; bounded, so a broken watch fails, never hangs."""
        for _ in range(6000):  # 60 s at most; a few seconds in practice
            if condition():
                return
            assert self.process is not None
            if self.process.returncode is not None:
                pytest.fail(f"the watcher exited ({self.process.returncode}): {what}")
            await asyncio.sleep(0.01)
        pytest.fail(f"timed out waiting for {what}; see {self.log}")

    async def stop(self, how: signal.Signals) -> int:
        assert self.process is not None
        assert self._reader is not None
        self.process.send_signal(how)
        try:
            async with asyncio.timeout(60):  # a stop that hangs fails the test
                code = await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            pytest.fail(f"the watcher did not stop on {how.name}; see {self.log}")
        await self._reader
        return code


def _expected(
    emulator: Emulator,
) -> Counter[tuple[str, str, str, str | None, str | None]]:
    """The events every transition the emulator made calls for."""
    want: Counter[tuple[str, str, str, str | None, str | None]] = Counter()
    for t in emulator.transitions:
        old = None if t.old_status is None else str(t.old_status)
        new = None if t.new_status is None else str(t.new_status)
        if old is None:
            want["created", t.project_id, t.job_id, None, new] += 1
        elif new is None:
            want["deleted", t.project_id, t.job_id, None, old] += 1
        else:
            want["status_changed", t.project_id, t.job_id, old, new] += 1
            if JobStatus(new).is_final:
                want["finished", t.project_id, t.job_id, old, new] += 1
    return want


def _told(
    lines: list[dict[str, Any]],
) -> Counter[tuple[str, str, str, str | None, str | None]]:
    told: Counter[tuple[str, str, str, str | None, str | None]] = Counter()
    seen: set[str] = set()
    for line in lines:
        if line["event_id"] in seen or line["kind"] == "progress":
            continue  # a repeat is counted apart; progress is not a transition
        seen.add(line["event_id"])
        told[
            line["kind"],
            line["project_id"],
            line["job"]["job_id"],
            line["old_status"],
            line["new_status"],
        ] += 1
    return told


def _change_while_down(emulator: Emulator, now: float) -> None:
    """A job finishes, a job is created, an old finished one is deleted: each
    on a job whose last change the watcher has seen (three seconds ago)."""
    pid = emulator.project_ids[0]
    settled = {
        t.job_id
        for t in emulator.transitions
        if t.at.timestamp() > now - 3 and t.project_id == pid
    }
    jobs = [j for j in emulator.jobs(pid) if j["job_id"] not in settled]
    running = next(j for j in reversed(jobs) if not JobStatus(j["status"]).is_final)
    emulator.set_status(pid, running["job_id"], JobStatus.FAILED)
    emulator.create_job(pid)
    emulator.delete_job(
        pid, next(j for j in jobs if JobStatus(j["status"]).is_final)["job_id"]
    )


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
async def test_a_restarted_watch_misses_nothing_and_repeats_nothing(
    how: signal.Signals, tmp_path: Path
) -> None:
    """Stopped by *how* mid-stream and started again: the two runs' lines
    together hold every change the emulator made, each once, except (after
    SIGKILL only) the one event the watcher was handing over at the kill."""
    clock = ListClock()
    async with Emulator(
        projects=PROJECTS,
        jobs=80,
        running=True,
        clock=clock,
        seed=7,
        new_jobs_per_hour=600,
    ) as emulator:
        clock.stats = emulator.stats
        state, log = tmp_path / "watch.db", tmp_path / "watch.log"

        first = Watcher(emulator, state, log)
        await first.start()
        await first.wait_for(lambda: len(first.lines) >= 12, "a dozen events")
        code = await first.stop(how)
        assert code == (-signal.SIGKILL if how == signal.SIGKILL else 0), (
            log.read_text()
        )

        _change_while_down(emulator, clock())
        second = Watcher(emulator, state, log)
        await second.start()
        await second.wait_for(lambda: clock() >= BASE + 90, "90 emulated seconds")
        clock.frozen = clock()
        # a poll that starts after the freeze follows one that saw it all
        seen_frozen = clock.lists() + 10 * PROJECTS
        await second.wait_for(lambda: clock.lists() >= seen_frozen, "two more polls")
        assert 0 == await second.stop(signal.SIGTERM), log.read_text()

    lines = first.lines + second.lines
    ids = Counter(line["event_id"] for line in lines)
    repeats = [event_id for event_id, n in ids.items() if n > 1]
    if how == signal.SIGKILL:
        assert repeats in ([], [first.lines[-1]["event_id"]])
    else:
        assert [] == repeats
    want = _expected(emulator)
    assert len(want) > 40  # the run saw a real stream of changes
    assert want == _told(lines)
