"""
Every example of README.md and docs/ runs as written.

The conventions (docs/contributing.md says the same to writers):

* A ```python block is a complete program: it runs as it stands, in its own
  Python process, and must exit 0 with nothing on stderr (no traceback, no
  warning). It starts an emulator itself, or reads ``IEF_ENDPOINT``,
  ``IEF_TOKEN`` and ``HUAWEICLOUD_SDK_PROJECT_ID``, which point at one this test
  serves.
* ``<!-- fragment -->`` (any text may follow the word) on the line above a
  fence marks a block that is not a program. It is not run.
* ``<!-- output -->`` above a ```text block: what the program before it
  prints, compared as doctest does (``...`` matches anything, runs of
  whitespace are alike).
* ``<!-- run-shell -->`` above a ```sh block: each of its lines that starts
  with ``ief-jobs`` runs against the served emulator, with ``PROJECT_ID``,
  ``JOB_ID``, ``P1`` and ``P2`` standing for its projects and a job. A command
  that runs until stopped (``watch``, ``emulator``) gets Ctrl-C once it has
  shown it works, and must stop cleanly.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from _support import served_in_thread
from ief_jobs.emulator import Emulator

ROOT = Path(__file__).parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
_FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<word>fragment|output|run-shell)\b.*-->\s*$")
_RUN_LIMIT = 60.0  # seconds: an example that hangs fails instead
_READY_LIMIT = 20.0  # seconds a long-running command has to show it works


@attrs.frozen
class Block:
    """One fenced block of a page."""

    page: Path
    line: int  # of the opening fence, from 1
    language: str
    marker: str | None  # fragment, output, run-shell, or None
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@attrs.frozen
class Example:
    """A complete program and, when the page shows it, what it prints."""

    block: Block
    output: str | None


def read_blocks(page: Path) -> list[Block]:
    """The fenced blocks of *page*, each with the marker on the line above it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        indent = len(fence["indent"])
        above = lines[index - 1] if index else ""
        marker = _MARKER.match(above)
        end = index + 1
        while not lines[end].strip().startswith("```"):
            end += 1
        code = "\n".join(line[indent:] for line in lines[index + 1 : end]) + "\n"
        blocks.append(
            Block(
                page=page,
                line=index + 1,
                language=fence["info"].strip().split(" ")[0],
                marker=marker["word"] if marker else None,
                code=code,
            )
        )
        index = end + 1
    return blocks


def collect_examples(pages: list[Path]) -> list[Example]:
    """Every complete Python program of *pages*, with the output shown after it."""
    examples: list[Example] = []
    for page in pages:
        last: Block | None = None
        for block in read_blocks(page):
            if block.language == "python" and block.marker != "fragment":
                if last is not None:
                    examples.append(Example(last, None))
                last = block
            elif block.marker == "output":
                assert last is not None, f"{block.where}: output of no program"
                examples.append(Example(last, block.code))
                last = None
        if last is not None:
            examples.append(Example(last, None))
    return examples


def collect_shell_lines(page: Path) -> list[tuple[int, str]]:
    """``(line, command)`` for each ief-jobs line of *page*'s run-shell blocks."""
    commands = []
    for block in read_blocks(page):
        if block.marker != "run-shell":
            continue
        for offset, line in enumerate(block.code.splitlines(), start=1):
            command = line.split("#", 1)[0].strip()
            if command.startswith("ief-jobs "):
                commands.append((block.line + offset, command))
    return commands


def collect_shell(pages: list[Path]) -> list[tuple[str, str]]:
    """``(where, command)`` for each ief-jobs line of the pages' run-shell blocks."""
    return [
        (f"{page.relative_to(ROOT)}:{line}", command)
        for page in pages
        for line, command in collect_shell_lines(page)
    ]


EXAMPLES = collect_examples(PAGES)
SHELL = collect_shell(PAGES)


@pytest.fixture(name="served", scope="module")
def _served() -> Iterator[Emulator]:
    """An emulator in a thread, for examples that read the environment."""
    with served_in_thread(Emulator(projects=4, jobs=150, seed=5)) as emulator:
        yield emulator


def example_env(emulator: Emulator) -> dict[str, str]:
    """This process's environment, credentials and endpoint the emulator's only."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HUAWEICLOUD_", "IEF_"))
    }
    env.update(
        IEF_ENDPOINT=emulator.base_url,
        IEF_TOKEN=emulator.token,
        HUAWEICLOUD_SDK_PROJECT_ID=emulator.project_ids[0],
    )
    return env


class TestCollector:
    def test_marked_blocks_are_not_programs(self, tmp_path: Path) -> None:
        """A fragment is skipped; an output block belongs to the program above."""
        page = tmp_path / "page.md"
        page.write_text(
            "<!-- fragment: a sketch -->\n```python\nsketch\n```\n\n"
            "  ```python\n  print(1)\n  ```\n\n<!-- output -->\n```text\n1\n```\n"
            "```python\nprint(2)\n```\n",
            encoding="utf-8",
        )

        examples = collect_examples([page])

        assert [("print(1)\n", "1\n", 6), ("print(2)\n", None, 14)] == [
            (e.block.code, e.output, e.block.line) for e in examples
        ]

    def test_shell_lines_of_marked_blocks(self, tmp_path: Path) -> None:
        """Only ief-jobs lines of run-shell blocks run, comments cut off."""
        page = tmp_path / "page.md"
        page.write_text(
            "```sh\nief-jobs demo\n```\n<!-- run-shell -->\n```sh\n"
            "export X=1\nief-jobs count P1   # one request\n```\n",
            encoding="utf-8",
        )

        assert [(7, "ief-jobs count P1")] == [
            (block_line, command) for block_line, command in collect_shell_lines(page)
        ]


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=[example.block.where for example in EXAMPLES]
)
def test_example_runs_as_written(
    example: Example, served: Emulator, tmp_path: Path
) -> None:
    """The program exits 0, prints nothing on stderr, and prints what the page shows."""
    program = tmp_path / "example.py"
    program.write_text(example.block.code, encoding="utf-8")

    done = subprocess.run(  # noqa: S603 (our own pages' examples)
        [sys.executable, str(program)],
        cwd=tmp_path,
        env=example_env(served),
        capture_output=True,
        text=True,
        timeout=_RUN_LIMIT,
        check=False,
    )

    assert (0, "") == (done.returncode, done.stderr), done.stdout
    if example.output is not None:
        checker = doctest.OutputChecker()
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        assert checker.check_output(example.output, done.stdout, flags), (
            f"the page shows:\n{example.output}\nthe program printed:\n{done.stdout}"
        )


def test_every_page_has_examples() -> None:
    """The collector finds the examples it should: a program per guide at least."""
    pages = {example.block.page.relative_to(ROOT).as_posix() for example in EXAMPLES}

    assert {
        "docs/index.md",
        "docs/getting-started.md",
        "docs/guides/listing.md",
        "docs/guides/watch.md",
        "docs/guides/testing.md",
    } <= pages
    assert len(SHELL) >= 8


def _substitute(command: str, emulator: Emulator, job_id: str) -> list[str]:
    """The page's placeholders filled in with the emulator's projects and a job."""
    first, second = emulator.project_ids[:2]
    command = command.replace("PROJECT_ID [PROJECT_ID ...]", f"{first} {second}")
    command = command.replace("PROJECT_ID", first).replace("JOB_ID", job_id)
    command = command.replace("P1 P2", " ".join(emulator.project_ids))
    # never a fixed port in a test: another program may hold it
    command = command.replace("--port 8080", "--port 0")
    return command.split()


def _interrupt_when(
    process: subprocess.Popen[str], ready: Callable[[], bool]
) -> tuple[str, str]:
    """Ctrl-C once *ready* holds; what the command printed."""
    deadline = time.monotonic() + _READY_LIMIT
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "it stopped on its own"
    assert ready(), "it did not show it works in time"
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=_RUN_LIMIT)


@pytest.mark.parametrize(("where", "command"), SHELL, ids=[w for w, _ in SHELL])
def test_shell_example_runs(
    where: str, command: str, served: Emulator, tmp_path: Path
) -> None:
    """Each ief-jobs line of the command-line section runs and ends cleanly."""
    job_id = served.jobs(served.project_ids[0])[0]["job_id"]
    argv = _substitute(command, served, job_id)
    argv[0] = str(Path(sys.executable).parent / "ief-jobs")
    before = served.stats.requests  # a watch is ready once it has asked for more
    process = subprocess.Popen(  # noqa: S603 (our own pages' commands)
        argv,
        cwd=tmp_path,
        env=example_env(served),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if argv[1] == "emulator":  # serves until Ctrl-C: ready once it says where
        first_line = process.stdout.readline() if process.stdout else ""
        assert json.loads(first_line)["base_url"].startswith("http://127.0.0.1:")
        stdout, stderr = _interrupt_when(process, lambda: True)
    elif argv[1] == "watch":  # polls until Ctrl-C

        def asked() -> bool:
            return served.stats.requests > before

        stdout, stderr = _interrupt_when(process, asked)
    else:
        stdout, stderr = process.communicate(timeout=_RUN_LIMIT)
        assert stdout, where
    assert (0, "") == (process.returncode, stderr), stdout
