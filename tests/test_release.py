"""
The release: the wheel holds what it should, installs, and runs the demo.

Marked ``release`` (CI runs it with the rest; ``-m "not release"`` skips it
while iterating): it builds the wheel and installs it into a fresh virtual
environment, which takes some seconds. pip fetches the dependencies from its
cache or the package index only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
    "project"
]["version"]
_LIMIT = 300.0  # seconds for one step: a hung install fails instead

pytestmark = pytest.mark.release


def _run(*argv: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    done = subprocess.run(  # noqa: S603 (our own tools, our own files)
        [str(arg) for arg in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=_LIMIT,
        check=False,
    )
    assert 0 == done.returncode, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(name="wheel", scope="module")
def _wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from this tree (with the dev environment's hatchling)."""
    out = tmp_path_factory.mktemp("dist")
    _run(
        sys.executable,
        "-m",
        "build",
        "--wheel",
        "--no-isolation",
        "--outdir",
        out,
        ROOT,
        cwd=out,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


class TestWheel:
    def test_its_name_carries_the_version(self, wheel: Path) -> None:
        """The wheel is ief_jobs-VERSION-py3-none-any, VERSION from pyproject.toml."""
        assert f"ief_jobs-{VERSION}-py3-none-any.whl" == wheel.name

    def test_it_holds_the_package_and_nothing_else(self, wheel: Path) -> None:
        """py.typed, the CLI and the emulator are in it; tests and benchmarks not."""
        names = zipfile.ZipFile(wheel).namelist()
        tops = {name.split("/")[0] for name in names}

        assert {"ief_jobs", f"ief_jobs-{VERSION}.dist-info"} == tops
        assert {
            "ief_jobs/py.typed",
            "ief_jobs/cli.py",
            "ief_jobs/emulator/__init__.py",
            "ief_jobs/emulator/_app.py",
        } <= set(names)
        assert [] == [
            name
            for name in names
            if "test" in name or "bench" in name or name.endswith((".png", ".md"))
        ]

    def test_installed_it_runs_the_demo(self, wheel: Path, tmp_path: Path) -> None:
        """A fresh virtual environment with the wheel (and cli extra) runs the demo."""
        venv = tmp_path / "venv"
        _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
        python = venv / "bin" / "python"
        _run(python, "-m", "pip", "install", "--quiet", f"{wheel}[cli]", cwd=tmp_path)

        version = _run(venv / "bin" / "ief-jobs", "--version", cwd=tmp_path)
        demo = _run(venv / "bin" / "ief-jobs", "demo", cwd=tmp_path)
        imported = _run(
            python, "-c", "import ief_jobs; print(ief_jobs.__file__)", cwd=tmp_path
        )

        assert VERSION in version
        assert "Listed 10,000 jobs from 5 projects" in demo
        assert Path(imported.strip()).is_relative_to(venv)


def test_the_changelog_has_this_version_under_unreleased() -> None:
    """CHANGELOG.md: an [Unreleased] heading, then this version's, dated."""
    headings = [
        line
        for line in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    ]

    assert "## [Unreleased]" == headings[0]
    assert re.fullmatch(
        rf"## \[{re.escape(VERSION)}\] - \d{{4}}-\d{{2}}-\d{{2}}", headings[1]
    )
